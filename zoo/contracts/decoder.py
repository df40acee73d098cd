"""The decoder contract: what every caption decoder, built-in or third-party, implements.

A decoder maps image ``Features`` and tokens to next-token logits. It is used in two ways:

* **Teacher forcing** (training): ``forward(features, tokens) -> logits``. ``tokens`` (B, T) start with
  <bos>; ``logits`` (B, T, V) at position t predict token t+1. Decoders should run the whole sequence in
  one fused call where they can (``nn.GRU`` over (B, T, E)), not a Python step loop.

  Optional: a decoder with ``skips_padding = True`` also accepts ``forward(features, tokens, keep=mask)``
  with ``keep`` (B, T) bool, True where a prediction is scored (the target is not padding; a prefix of
  each row), and returns logits (K, V) for those K positions in row-major order. Why: the output layer
  over the vocabulary is most of a training step at COCO sizes, and a quarter of a batch's positions are
  padding. Any other decoder still works: ``CaptionModel`` takes its full logits and indexes them.
* **Generation** (beam search, greedy = beam 1), one token at a time:

  1. ``memory = prepare(features)``: per-image work done once (e.g. the attention projection of the grid).
     Any nested structure of tensors with the batch first (``Features`` included).
  2. ``state = init_state(memory)``: the recurrent state, tensors with the **batch first**.
  3. ``logits, state = step(prev_tokens, state, memory)``: ``prev_tokens`` (B,) → logits (B, V).

  The beam search expands, reorders and drops rows of ``memory`` and ``state`` with
  ``select_batch``/``reorder_state``; a decoder whose state is not batch-first overrides ``reorder_state``.

  Optional, for attention maps: a decoder with ``attends = True`` implements
  ``last_attention(state) -> (B, N)``, the weights over the N positions of ``features.grid`` that the
  ``step`` which returned ``state`` used to predict its token (each row sums to 1; before the first step
  it may be anything, zeros for ``gru-attn``). Its state must therefore carry them (``gru-attn``'s is
  ``(h, alpha)``). Why in the state rather than as another return value of ``step``: ``step``'s signature
  stays the same for every decoder, the weights follow beam reordering like the rest of the state, and the
  beam search reads them only when asked (``beam_search(..., return_attention=True)``,
  ``CaptionModel.generate(..., return_attention=True)``), so decoding without them costs nothing more.

Because everything goes through this contract, a third-party decoder gets beam search, evaluation,
checkpoints and the leaderboard for free. Constructor: ``Decoder(vocab_size, feature_dim, **options)``;
options are plain JSON values (they are stored in checkpoints and shown by ``zoo info``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from zoo.contracts.features import Features, select_batch


class Decoder(nn.Module):
    """Base class for decoders. Subclasses implement ``forward``, ``init_state`` and ``step``."""

    #: True when ``forward`` accepts ``keep=`` and computes logits only there (see the module docstring)
    skips_padding: ClassVar[bool] = False
    #: True when the state carries attention weights over the grid, read by ``last_attention``
    attends: ClassVar[bool] = False

    def __init__(self, vocab_size: int, feature_dim: int) -> None:
        super().__init__()
        self.vocab_size = int(vocab_size)
        self.feature_dim = int(feature_dim)

    def forward(self, features: Features, tokens: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def prepare(self, features: Features) -> Any:
        """Work done once per image before decoding; default: the features themselves."""
        return features

    def init_state(self, memory: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def step(self, prev_tokens: torch.Tensor, state: Any, memory: Any) -> tuple[torch.Tensor, Any]:  # pragma: no cover
        raise NotImplementedError

    def last_attention(self, state: Any) -> torch.Tensor:
        """(B, N) weights over the grid of the step that returned ``state`` (decoders with ``attends``)."""
        raise NotImplementedError(f"{type(self).__name__} does not attend (attends = False)")

    def reorder_state(self, state: Any, index: torch.Tensor) -> Any:
        """Rows ``index`` of the state (beam expansion, reordering, dropping finished images)."""
        return select_batch(state, index)

    def forward_stepwise(self, features: Features, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing through ``step`` one token at a time: the reference the fused ``forward``
        must match (tests) and the baseline it is benchmarked against."""
        memory = self.prepare(features)
        state = self.init_state(memory)
        out = []
        for t in range(tokens.shape[1]):
            logits, state = self.step(tokens[:, t], state, memory)
            out.append(logits)
        return torch.stack(out, dim=1)
