"""A Transformer caption decoder as a third-party Caption Zoo plugin.

Everything a decoder needs is the contract in ``zoo.contracts.decoder``: ``forward`` for teacher forcing, and
``prepare`` / ``init_state`` / ``step`` for generation. Beam search, evaluation, checkpoints and the
leaderboard then work without any change to the zoo.

Generation keeps the tokens generated so far as the state (batch-first, as the contract asks) and runs
the decoder over that prefix at each step: simple, and fine for captions of ~20 tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn

import zoo


class TransformerDecoder(zoo.Decoder):
    """Causal self-attention over the caption, cross-attention over the image grid (pre-norm)."""

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int,
        d_model: int = 128,
        num_heads: int = 4,
        num_layers: int = 2,
        dropout: float = 0.1,
        max_len: int = 64,
    ) -> None:
        super().__init__(vocab_size, feature_dim)
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        self.memory_proj = nn.Linear(feature_dim, d_model)
        layer = nn.TransformerDecoderLayer(
            d_model, num_heads, 4 * d_model, dropout, batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerDecoder(layer, num_layers)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)
        self.scale = math.sqrt(d_model)

    def prepare(self, features: zoo.Features) -> torch.Tensor:
        # the pooled vector joins the grid as one more memory position
        mem = torch.cat([features.pooled.unsqueeze(1), features.grid], dim=1)
        return self.memory_proj(mem)

    def _decode(self, tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        T = tokens.shape[1]
        if T > self.max_len:
            raise ValueError(f"sequence of {T} tokens is longer than max_len={self.max_len}")
        x = self.embed(tokens) * self.scale + self.pos[:T]
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=tokens.device, dtype=x.dtype)
        h = self.layers(x, memory, tgt_mask=mask, tgt_is_causal=True)
        return self.out(self.norm(h))

    def forward(self, features: zoo.Features, tokens: torch.Tensor) -> torch.Tensor:
        return self._decode(tokens, self.prepare(features))

    def init_state(self, memory: torch.Tensor) -> torch.Tensor:
        return torch.zeros((memory.shape[0], 0), dtype=torch.long, device=memory.device)

    def step(self, prev_tokens, state, memory):
        seq = torch.cat([state, prev_tokens.unsqueeze(1)], dim=1)
        logits = self._decode(seq, memory)[:, -1]
        return logits, seq


@zoo.hookimpl
def zoo_register(registry):
    registry.add_decoder("transformer", TransformerDecoder)
