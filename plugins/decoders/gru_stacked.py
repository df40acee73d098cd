"""``gru-stacked``: the ``gru`` captioner with ``num_layers`` ≥ 2 GRU layers and dropout between them.

Each layer's initial state comes from its own slice of tanh(W_init · pooled). Training is one fused
``nn.GRU`` call over all layers and steps; the GRU equations are documented in ``zoo_plugins.decoders.gru``.
"""

from __future__ import annotations

import zoo
from zoo_plugins.decoders._rnn import FusedGRUDecoder


class StackedGRUDecoder(FusedGRUDecoder):
    """Stacked GRU: ``num_layers`` (≥ 2) GRU layers, dropout between layers, state init from the image.

    Options: ``embed_size``, ``hidden_size``, ``num_layers`` (≥ 2), ``dropout`` (embeddings, between
    layers, before the output layer), ``tie_weights``, ``norm_features``."""

    registry_name = "gru-stacked"

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int,
        embed_size: int = 256,
        hidden_size: int = 512,
        num_layers: int = 2,
        dropout: float = 0.3,
        tie_weights: bool = False,
        norm_features: bool = True,
    ) -> None:
        super().__init__(
            vocab_size,
            feature_dim,
            embed_size=embed_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout,
            tie_weights=tie_weights,
            norm_features=norm_features,
            min_layers=2,
        )


@zoo.hookimpl
def zoo_register(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add_decoder("gru-stacked", StackedGRUDecoder)
