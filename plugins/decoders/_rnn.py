"""Pieces shared by the built-in recurrent decoders: option checks, the per-channel feature norm, the
word embedding and output head (with optional weight tying), and the fused GRU decoder behind ``gru``
and ``gru-stacked``.

Why a shared fused core: training runs ONE ``nn.GRU`` call over the whole (B, T, E) sequence (cuDNN on a
GPU; on a CPU one ATen call that projects the inputs of all steps in one matrix product and loops over
time in C++), while generation calls the *same* module on one time step, so ``forward`` equals the base
class's ``forward_stepwise`` up to float rounding. The state handed to beam search is batch-first,
(B, layers, H), so the generic ``select_batch`` reorders it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import zoo
from zoo.errors import ZooError


class DecoderOptionError(ZooError, ValueError):
    """A decoder option with a bad value; the message names the decoder and the option."""


def check_int(decoder: str, option: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DecoderOptionError(
            f"decoder {decoder!r}: option {option} must be an integer ≥ {minimum}, got {value!r}"
        )
    return int(value)


def check_dropout(decoder: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise DecoderOptionError(
            f"decoder {decoder!r}: option dropout must be a number in [0, 1), got {value!r}"
        )
    return float(value)


def check_bool(decoder: str, option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise DecoderOptionError(f"decoder {decoder!r}: option {option} must be true or false, got {value!r}")
    return value


def check_features(decoder: "zoo.Decoder", name: str, features: zoo.Features) -> None:
    """A decoder built for one encoder fed another's features fails here, not deep inside a matmul."""
    if features.dim != decoder.feature_dim or features.pooled.shape[-1] != decoder.feature_dim:
        raise ZooError(
            f"decoder {name!r} was built for feature_dim={decoder.feature_dim} but got features of size "
            f"{features.dim} (grid) / {features.pooled.shape[-1]} (pooled). Build the decoder with the "
            f"encoder's feature_dim."
        )


def make_embedding(vocab_size: int, embed_size: int) -> nn.Embedding:
    emb = nn.Embedding(vocab_size, embed_size)
    # small uniform init (as in the classic captioners): N(0, 1) rows make tied output logits huge
    nn.init.uniform_(emb.weight, -0.1, 0.1)
    return emb


class FeatureNorm(nn.Module):
    """Per-channel standardisation of encoder features: batch norm without affine parameters (the linear
    layer that reads the features has its own scale and bias).

    Why: a frozen encoder's channels share a large image-independent offset and differ widely in scale,
    so the part that tells images apart can be a few percent of the signal (a random resnet10t on
    ``shapes``: per-channel spread across images ≈ 6% of the mean magnitude). Standardising each channel
    over the batch lifts that part to unit scale; on the 300-step ``shapes`` training run it took held-out
    CIDEr-D of ``gru`` from 0.30 to 1.0. Batch statistics in training, running averages in eval (so
    generation is per image and batch-independent); a training batch of one row uses the running
    averages, since one row has no spread."""

    def __init__(self, dim: int, enabled: bool) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False) if enabled else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn is None:
            return x
        flat = x.reshape(-1, x.shape[-1])
        if self.training and flat.shape[0] < 2:
            out = nn.functional.batch_norm(
                flat, self.bn.running_mean, self.bn.running_var, training=False, eps=self.bn.eps
            )
        else:
            out = self.bn(flat)
        return out.view_as(x)


class OutputHead(nn.Module):
    """Hidden state → vocabulary logits.

    With ``tie=True`` the vocabulary matrix IS the embedding matrix (the same ``Parameter``, so it is
    stored once in checkpoints and trained from both ends); a linear projection hidden→embed is inserted
    when the two sizes differ, since a (V, E) matrix cannot read an H-sized vector."""

    def __init__(self, hidden_size: int, embedding: nn.Embedding, tie: bool) -> None:
        super().__init__()
        vocab_size, embed_size = embedding.weight.shape
        if tie:
            self.proj: nn.Module = (
                nn.Linear(hidden_size, embed_size) if hidden_size != embed_size else nn.Identity()
            )
            self.linear = nn.Linear(embed_size, vocab_size)
            self.linear.weight = embedding.weight
        else:
            self.proj = nn.Identity()
            self.linear = nn.Linear(hidden_size, vocab_size)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(self.proj(hidden))


def packing_pays(rnn: nn.RNNBase, x: torch.Tensor) -> bool:
    """Whether skipping padded steps by packing is worth it. Not for an ``nn.LSTM`` on a CPU: torch runs
    it through oneDNN only on unpacked input, which outweighs the skipped steps (at the demo's sizes the
    packed call is 1.5× slower)."""
    return not (isinstance(rnn, nn.LSTM) and x.device.type == "cpu")


def run_scored(rnn: nn.RNNBase, x: torch.Tensor, hx: Any, keep: torch.Tensor | None) -> torch.Tensor:
    """``rnn`` (batch first) over ``x`` (B, T, E) from state ``hx``: all outputs (B, T, H), or with a
    ``keep`` mask (B, T) only the outputs there, (K, H) in row-major order.

    Why: a COCO batch is about a third padding. Given ``keep``, each row runs only up to its last kept
    position (a packed sequence: one ``nn.GRU``/``nn.LSTM`` call still, over fewer rows as captions end),
    and the padding never reaches the output layer, most of a training step at COCO vocabulary sizes."""
    if keep is None:
        return rnn(x, hx)[0]
    if not packing_pays(rnn, x):
        return rnn(x, hx)[0][keep]  # the output layer still skips the padding
    T = keep.shape[1]
    lengths = T - keep.flip(1).to(torch.int8).argmax(1)  # one past each row's last kept position
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = rnn(packed, hx)  # nn.RNNBase reorders hx to the packed (length-sorted) order itself
    return pad_packed_sequence(out, batch_first=True, total_length=T)[0][keep]


class FusedGRUDecoder(zoo.Decoder):
    """A CNN→GRU captioner with ``num_layers`` layers: ``h0 = tanh(W_init · norm(pooled) + b)`` (one
    H-vector per layer) initialises the GRU, which reads word embeddings; a linear layer maps its output
    to logits.
    ``norm`` is ``FeatureNorm`` (per-channel batch norm) or the identity with ``norm_features=False``.

    Dropout is applied to the embeddings, between GRU layers (``nn.GRU``'s own dropout) and before the
    output layer. State for generation: ``h`` of shape (B, num_layers, H), batch first."""

    registry_name: ClassVar[str] = "gru"
    skips_padding = True

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int,
        *,
        embed_size: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        tie_weights: bool,
        norm_features: bool = True,
        min_layers: int = 1,
    ) -> None:
        name = self.registry_name
        super().__init__(
            check_int(name, "vocab_size", vocab_size), check_int(name, "feature_dim", feature_dim)
        )
        self.embed_size = check_int(name, "embed_size", embed_size)
        self.hidden_size = check_int(name, "hidden_size", hidden_size)
        self.num_layers = check_int(name, "num_layers", num_layers, min_layers)
        self.dropout_p = check_dropout(name, dropout)
        self.tie_weights = check_bool(name, "tie_weights", tie_weights)
        self.norm_features = check_bool(name, "norm_features", norm_features)

        self.embed = make_embedding(self.vocab_size, self.embed_size)
        self.drop = nn.Dropout(self.dropout_p)
        self.feature_norm = FeatureNorm(self.feature_dim, self.norm_features)
        self.init_h = nn.Linear(self.feature_dim, self.num_layers * self.hidden_size)
        self.rnn = nn.GRU(
            self.embed_size,
            self.hidden_size,
            num_layers=self.num_layers,
            batch_first=True,
            dropout=self.dropout_p if self.num_layers > 1 else 0.0,
        )
        self.head = OutputHead(self.hidden_size, self.embed, self.tie_weights)

    def prepare(self, features: zoo.Features) -> torch.Tensor:
        """The initial hidden state (B, num_layers, H): the only per-image work this decoder needs."""
        check_features(self, self.registry_name, features)
        h0 = torch.tanh(self.init_h(self.feature_norm(features.pooled)))
        return h0.view(-1, self.num_layers, self.hidden_size)

    def init_state(self, memory: torch.Tensor) -> torch.Tensor:
        return memory

    def forward(
        self, features: zoo.Features, tokens: torch.Tensor, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        h0 = self.prepare(features).transpose(0, 1).contiguous()  # nn.GRU wants (layers, B, H)
        out = run_scored(self.rnn, self.drop(self.embed(tokens)), h0, keep)  # one fused call over all steps
        return self.head(self.drop(out))

    def step(
        self, prev_tokens: torch.Tensor, state: torch.Tensor, memory: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.drop(self.embed(prev_tokens)).unsqueeze(1)  # (B, 1, E)
        out, h = self.rnn(x, state.transpose(0, 1).contiguous())
        return self.head(self.drop(out[:, 0])), h.transpose(0, 1)
