"""``gru``: the classic CNN→GRU captioner the project started from.

The pooled image vector (each channel standardised, see ``FeatureNorm``), through a linear layer and
tanh, initialises the hidden state of a single-layer GRU that reads the caption's word embeddings; a
linear layer over its output gives the next-token logits.
Training runs one fused ``nn.GRU`` call over the whole sequence; generation calls the same module one
step at a time (``forward`` equals ``forward_stepwise``).

The GRU equations, in the exact form ``torch.nn.GRU``/``nn.GRUCell`` (and cuDNN) compute them, for input
x_t and previous state h_{t-1}::

    r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)            reset gate
    z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)            update gate
    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))  candidate
    h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}

Difference from Cho et al. (2014, arXiv:1406.1078, final version): there the reset gate acts on the
state *before* the recurrent matrix, h̃_t = tanh(W x_t + U (r_t ⊙ h_{t-1})); torch/cuDNN apply it *after*
the product, r_t ⊙ (W_hn h_{t-1} + b_hn), which lets all three recurrent products be one matrix multiply
(the "reset after" variant, as in the paper's first arXiv version). The interpolation is the same as
Cho's, h_t = z_t ⊙ h_{t-1} + (1 − z_t) ⊙ h̃_t: z gates the *old* state. The form with z on the
candidate, h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t (Chung et al., 2014), is the same model with z
replaced by 1 − z.
"""

from __future__ import annotations

import zoo
from zoo_plugins.decoders._rnn import FusedGRUDecoder


class GRUDecoder(FusedGRUDecoder):
    """CNN→GRU: tanh(W·pooled) initialises one GRU layer; linear output over the vocabulary.

    Options: ``embed_size`` (word embedding), ``hidden_size`` (GRU state), ``dropout`` (on embeddings and
    before the output layer), ``tie_weights`` (output matrix = embedding matrix, with a hidden→embed
    projection when the sizes differ), ``norm_features`` (standardise each feature channel with batch
    norm first; see ``FeatureNorm``)."""

    registry_name = "gru"

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int,
        embed_size: int = 256,
        hidden_size: int = 512,
        dropout: float = 0.3,
        tie_weights: bool = False,
        norm_features: bool = True,
    ) -> None:
        super().__init__(
            vocab_size,
            feature_dim,
            embed_size=embed_size,
            hidden_size=hidden_size,
            num_layers=1,
            dropout=dropout,
            tie_weights=tie_weights,
            norm_features=norm_features,
        )


@zoo.hookimpl
def zoo_register(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add_decoder("gru", GRUDecoder)
