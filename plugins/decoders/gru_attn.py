"""``gru-attn``: Show, Attend and Tell (Xu et al., 2015) with a GRU cell.

At step t, with previous hidden state h_{t-1} and grid features g_1..g_N (the encoder's (B, N, C) grid)::

    e_ti  = vᵀ tanh(W_g g_i + W_h h_{t-1} + b)      additive (Bahdanau) attention
    α_t   = softmax_i(e_ti)
    c_t   = β_t ⊙ Σ_i α_ti g_i,  β_t = σ(W_β h_{t-1})  (the gate; β_t = 1 with ``gate=False``)
    h_t   = GRUCell([E y_{t-1}; c_t], h_{t-1})
    logits_t = W_o h_t + b_o

with h_0 = tanh(W_init · pooled + b). Grid and pooled features are first standardised per channel
(``FeatureNorm``, unless ``norm_features=False``): g_i above are the standardised grid features. The GRU
cell is torch's (equations in ``zoo_plugins.decoders.gru``).

The attention energies are computed as 2 vᵀσ(2u) with u = W_g g_i + W_h h_{t-1} + b: since
tanh(u) = 2σ(2u) − 1, that is vᵀ tanh(u) + vᵀ1, a constant per row which the softmax ignores, so α_t is
exactly as above (to float rounding) while the largest elementwise op of the decoder, over (B, N, A),
runs several times faster on CPU (torch's tanh is far slower than its sigmoid there).

W_g g_i does not depend on t, so it is computed ONCE per batch, in ``prepare`` for generation and at the
start of ``forward`` for training. Teacher forcing has to loop over time (c_t needs h_{t-1}), but each
step is only the attention and one ``GRUCell``; the embeddings and the output layer run once over the
whole sequence. Given the training loss's ``keep`` mask, finished captions leave the loop (rows sorted by
length, the running ones a shrinking prefix) and the output layer runs on scored positions only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

import zoo
from zoo_plugins.decoders._rnn import (
    FeatureNorm,
    OutputHead,
    check_bool,
    check_dropout,
    check_features,
    check_int,
    make_embedding,
)

NAME = "gru-attn"


class AttentionMemory(NamedTuple):
    """Per-image work done once: the (standardised) grid, its attention projection W_g·grid, and h_0 (all
    batch first)."""

    grid: torch.Tensor  # (B, N, C)
    keys: torch.Tensor  # (B, N, A)
    h0: torch.Tensor  # (B, H)


class AttentionState(NamedTuple):
    """The generation state: h_t and the weights α_t (over the grid) of the step that produced it, so
    that ``last_attention`` can read them (zeros before the first step). Batch first, like the memory."""

    h: torch.Tensor  # (B, H)
    alpha: torch.Tensor  # (B, N)


class GRUAttentionDecoder(zoo.Decoder):
    """Show-Attend-Tell with a GRU cell: additive attention over the grid, gated context + word as input.

    Options: ``embed_size``, ``hidden_size``, ``attention_size`` (A of the additive attention),
    ``dropout`` (embeddings and before the output), ``gate`` (sigmoid gate on the context, as in the
    paper), ``tie_weights``, ``norm_features`` (standardise each feature channel of the grid and of the
    pooled vector first, see ``FeatureNorm``)."""

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int,
        embed_size: int = 256,
        hidden_size: int = 512,
        attention_size: int = 512,
        dropout: float = 0.3,
        gate: bool = True,
        tie_weights: bool = False,
        norm_features: bool = True,
    ) -> None:
        super().__init__(
            check_int(NAME, "vocab_size", vocab_size), check_int(NAME, "feature_dim", feature_dim)
        )
        self.embed_size = check_int(NAME, "embed_size", embed_size)
        self.hidden_size = check_int(NAME, "hidden_size", hidden_size)
        self.attention_size = check_int(NAME, "attention_size", attention_size)
        self.dropout_p = check_dropout(NAME, dropout)
        self.gate = check_bool(NAME, "gate", gate)
        self.tie_weights = check_bool(NAME, "tie_weights", tie_weights)
        self.norm_features = check_bool(NAME, "norm_features", norm_features)
        C, H, A = self.feature_dim, self.hidden_size, self.attention_size

        self.embed = make_embedding(self.vocab_size, self.embed_size)
        self.drop = nn.Dropout(self.dropout_p)
        self.grid_norm = FeatureNorm(C, self.norm_features)
        self.pooled_norm = FeatureNorm(C, self.norm_features)
        self.init_h = nn.Linear(C, H)
        self.att_grid = nn.Linear(C, A)  # W_g (+ b): precomputed once per batch
        self.att_hidden = nn.Linear(H, A, bias=False)  # W_h
        self.att_score = nn.Linear(A, 1, bias=False)  # v
        self.gate_proj = nn.Linear(H, C) if self.gate else None  # W_β
        self.cell = nn.GRUCell(self.embed_size + C, H)
        self.head = OutputHead(H, self.embed, self.tie_weights)

    # -- generation contract ---------------------------------------------------------------------------
    def prepare(self, features: zoo.Features) -> AttentionMemory:
        check_features(self, NAME, features)
        grid = self.grid_norm(features.grid)
        h0 = torch.tanh(self.init_h(self.pooled_norm(features.pooled)))
        return AttentionMemory(grid, self.att_grid(grid), h0)

    attends = True

    def init_state(self, memory: AttentionMemory) -> AttentionState:
        return AttentionState(memory.h0, memory.grid.new_zeros(memory.grid.shape[:2]))

    def step(
        self, prev_tokens: torch.Tensor, state: AttentionState, memory: AttentionMemory
    ) -> tuple[torch.Tensor, AttentionState]:
        h, alpha = self._advance(self.drop(self.embed(prev_tokens)), state.h, memory)
        return self.head(self.drop(h)), AttentionState(h, alpha)

    def last_attention(self, state: AttentionState) -> torch.Tensor:
        return state.alpha

    # -- teacher forcing -------------------------------------------------------------------------------
    skips_padding = True

    def forward(
        self, features: zoo.Features, tokens: torch.Tensor, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        memory = self.prepare(features)  # batch statistics of the feature norm: over the whole batch
        words = self.drop(self.embed(tokens))  # (B, T, E), once
        if keep is not None:
            lengths = keep.sum(1)
            if bool((keep == (torch.arange(keep.shape[1], device=keep.device) < lengths[:, None])).all()):
                return self.head(self.drop(self._run_shrinking(words, memory, lengths, keep)))
        h = memory.h0
        hs = []
        for t in range(tokens.shape[1]):
            h, _ = self._advance(words[:, t], h, memory)
            hs.append(h)
        out = torch.stack(hs, dim=1)
        if keep is not None:  # not a prefix of each row: every step for every row, then select
            out = out[keep]
        return self.head(self.drop(out))  # output layer once over the kept (or all) positions

    def _run_shrinking(
        self, words: torch.Tensor, memory: AttentionMemory, lengths: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """The step loop with finished captions leaving it: rows sorted by length, so at step t the
        n_t captions still running are the first n_t rows (as ``pack_padded_sequence`` arranges an
        ``nn.GRU``'s input). Returns the hidden states at the ``keep`` positions, (K, H) row-major."""
        order = torch.argsort(lengths, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order), device=order.device)
        memory = AttentionMemory(*(x[order] for x in memory))
        words = words[order]
        running = (lengths[order][None, :] > torch.arange(words.shape[1], device=lengths.device)[:, None]).sum(1)
        counts = running.tolist()  # one host sync per batch
        h = memory.h0
        hs = []
        for t, n in enumerate(counts):
            if n == 0:
                break
            h, _ = self._advance(words[:n, t], h[:n], AttentionMemory(*(x[:n] for x in memory)))
            hs.append(h)
        flat = torch.cat(hs)  # time-major: step 0's rows, then step 1's, ...
        starts = torch.cumsum(running, 0) - running
        rows, steps = keep.nonzero(as_tuple=True)
        return flat[starts[steps] + rank[rows]]

    # -- internals -------------------------------------------------------------------------------------
    def attend(self, h: torch.Tensor, memory: AttentionMemory) -> tuple[torch.Tensor, torch.Tensor]:
        """Context (B, C) (gated) and attention weights (B, N) for hidden state ``h`` (B, H)."""
        u = memory.keys + self.att_hidden(h).unsqueeze(1)  # (B, N, A)
        # vᵀ tanh(u) up to a constant the softmax ignores (see the module docstring); in place: no copies
        energy = self.att_score(u.mul_(2.0).sigmoid_()).squeeze(-1)
        alpha = torch.softmax(2.0 * energy, dim=-1)
        context = torch.bmm(alpha.unsqueeze(1), memory.grid).squeeze(1)
        if self.gate_proj is not None:
            context = torch.sigmoid(self.gate_proj(h)) * context
        return context, alpha

    def _advance(
        self, word: torch.Tensor, h: torch.Tensor, memory: AttentionMemory
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h_t and the weights α_t it was computed with."""
        context, alpha = self.attend(h, memory)
        return self.cell(torch.cat([word, context], dim=-1), h), alpha


@zoo.hookimpl
def zoo_register(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add_decoder("gru-attn", GRUAttentionDecoder)
