"""``lstm``: the Show-and-Tell baseline (Vinyals et al., 2015) with an LSTM.

As in the paper, the image is the LSTM's **first input step**, not its initial state: the pooled vector is
projected to the word-embedding size, fed once from a zero state, and the words follow. So
``init_state`` runs the LSTM on the image embedding and returns its (h, c); ``forward`` runs image + words
through ONE fused ``nn.LSTM`` call and drops the output of the image step. The state handed to beam search
is ``(h, c)``, each (B, num_layers, H), batch first.
"""

from __future__ import annotations

from typing import Any

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
    run_scored,
)

NAME = "lstm"


class LSTMDecoder(zoo.Decoder):
    """Show and Tell: the image embedding is the LSTM's first input, then the words; linear output.

    Options: ``embed_size`` (words and image are embedded to this size), ``hidden_size``, ``num_layers``
    (1 in the paper), ``dropout`` (embeddings, between layers, before the output), ``tie_weights``,
    ``norm_features`` (standardise each feature channel first, see ``FeatureNorm``)."""

    skips_padding = True

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int,
        embed_size: int = 256,
        hidden_size: int = 512,
        num_layers: int = 1,
        dropout: float = 0.3,
        tie_weights: bool = False,
        norm_features: bool = True,
    ) -> None:
        super().__init__(
            check_int(NAME, "vocab_size", vocab_size), check_int(NAME, "feature_dim", feature_dim)
        )
        self.embed_size = check_int(NAME, "embed_size", embed_size)
        self.hidden_size = check_int(NAME, "hidden_size", hidden_size)
        self.num_layers = check_int(NAME, "num_layers", num_layers)
        self.dropout_p = check_dropout(NAME, dropout)
        self.tie_weights = check_bool(NAME, "tie_weights", tie_weights)
        self.norm_features = check_bool(NAME, "norm_features", norm_features)

        self.embed = make_embedding(self.vocab_size, self.embed_size)
        self.feature_norm = FeatureNorm(self.feature_dim, self.norm_features)
        self.image_embed = nn.Linear(self.feature_dim, self.embed_size)
        self.drop = nn.Dropout(self.dropout_p)
        self.rnn = nn.LSTM(
            self.embed_size,
            self.hidden_size,
            num_layers=self.num_layers,
            batch_first=True,
            dropout=self.dropout_p if self.num_layers > 1 else 0.0,
        )
        self.head = OutputHead(self.hidden_size, self.embed, self.tie_weights)

    def prepare(self, features: zoo.Features) -> torch.Tensor:
        """The image embedding (B, E), the LSTM's input at step −1."""
        check_features(self, NAME, features)
        return self.image_embed(self.feature_norm(features.pooled))

    def init_state(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, (h, c) = self.rnn(self.drop(memory).unsqueeze(1))  # zero state, one step on the image
        return h.transpose(0, 1), c.transpose(0, 1)

    def forward(
        self, features: zoo.Features, tokens: torch.Tensor, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        image = self.drop(self.prepare(features)).unsqueeze(1)  # (B, 1, E)
        x = torch.cat([image, self.drop(self.embed(tokens))], dim=1)  # (B, 1 + T, E)
        if keep is not None:  # the image step is never scored
            keep = torch.cat([torch.zeros_like(keep[:, :1]), keep], dim=1)
        out = run_scored(self.rnn, x, None, keep)  # one fused call: image step + all word steps
        return self.head(self.drop(out if keep is not None else out[:, 1:]))

    def step(
        self, prev_tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], memory: Any
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h, c = (s.transpose(0, 1).contiguous() for s in state)
        out, (h, c) = self.rnn(self.drop(self.embed(prev_tokens)).unsqueeze(1), (h, c))
        return self.head(self.drop(out[:, 0])), (h.transpose(0, 1), c.transpose(0, 1))


@zoo.hookimpl
def zoo_register(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add_decoder("lstm", LSTMDecoder)
