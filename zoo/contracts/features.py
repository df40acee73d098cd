"""What an encoder hands a decoder: a grid of region features and one pooled vector per image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Features:
    """``grid``: (B, N, C) features, one per spatial position (or ViT patch); ``pooled``: (B, C)."""

    grid: torch.Tensor
    pooled: torch.Tensor

    def __post_init__(self) -> None:
        if self.grid.dim() != 3 or self.pooled.dim() != 2:
            raise ValueError(
                f"Features need grid (B, N, C) and pooled (B, C); got {tuple(self.grid.shape)} and "
                f"{tuple(self.pooled.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return self.grid.shape[0]

    @property
    def dim(self) -> int:
        return self.grid.shape[-1]

    def index_select(self, index: torch.Tensor) -> "Features":
        return Features(self.grid.index_select(0, index), self.pooled.index_select(0, index))

    def to(self, *args: Any, **kwargs: Any) -> "Features":
        return Features(self.grid.to(*args, **kwargs), self.pooled.to(*args, **kwargs))


def select_batch(tree: Any, index: torch.Tensor) -> Any:
    """Pick rows ``index`` along the batch (first) dimension of every tensor in a nested structure
    (tensors, tuples, lists, dicts, ``Features``, anything with ``index_select``; None passes through)."""
    if tree is None:
        return None
    if isinstance(tree, torch.Tensor):
        return tree.index_select(0, index)
    if isinstance(tree, (tuple, list)):
        out = [select_batch(t, index) for t in tree]
        return type(tree)(out) if not hasattr(tree, "_fields") else type(tree)(*out)
    if isinstance(tree, dict):
        return {k: select_batch(v, index) for k, v in tree.items()}
    if hasattr(tree, "index_select"):
        return tree.index_select(index)
    raise TypeError(f"cannot select a batch from {type(tree).__name__}")
