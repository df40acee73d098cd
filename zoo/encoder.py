"""The encoder interface: images in, ``Features`` out.

Built-in encoders are every timm backbone (``zoo_plugins.encoders.timm_encoder``); a plugin can add others
with ``registry.add_encoder(name, factory)`` or a whole family with ``registry.add_encoder_family``.
Factories take ``(name, pretrained=False, freeze=False, img_size=None, **kwargs)``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from zoo.features import Features


class Encoder(nn.Module):
    """Base class. ``feature_dim`` is C of the grid (B, N, C) and of the pooled vector (B, C)."""

    name: str
    feature_dim: int
    frozen: bool = False

    def forward(self, images: torch.Tensor) -> Features:  # pragma: no cover
        raise NotImplementedError

    def transform(self, train: bool = False) -> Callable[[Any], torch.Tensor]:  # pragma: no cover
        """PIL image → normalised tensor, as the backbone was trained (its data config)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Options needed to rebuild this encoder (stored in checkpoints)."""
        return {}

    def weights_id(self) -> str:
        """Identifies the weights (feature-cache key): 'random', a source name, or a file hash."""
        return "random"
