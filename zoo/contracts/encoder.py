"""The encoder interface: images in, ``Features`` out.

Built-in encoders are every timm backbone (``zoo_plugins.encoders.timm_encoder``); a plugin can add others
with ``registry.add_encoder(name, factory)`` or a whole family with ``registry.add_encoder_family``.
Factories take ``(name, pretrained=False, freeze=False, img_size=None, **kwargs)``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from zoo.contracts.features import Features


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

    def grid_shape(self, num_positions: int, image_size: tuple[int, int] | None = None) -> tuple[int, int]:
        """(h, w) of the grid, h * w == ``num_positions``, for images of ``image_size`` (H, W) pixels (None:
        the size ``transform`` produces); grid position i is row ``i // w``, column ``i % w``. Attention
        maps need it to lie on the image. Default: the factorisation closest to the image's aspect ratio
        (square when unknown), which is what a CNN's feature map or a ViT's patch grid is; an encoder that
        knows its grid exactly overrides this."""
        return factor_grid(num_positions, image_size)

    def unnormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Transformed images (B, 3, H, W) back to displayable pixels in [0, 1], so that an attention map
        is drawn over exactly the pixels the grid covers (after the transform's resize and crop). Default:
        each image's channels stretched to [0, 1]; an encoder that knows its normalisation overrides it."""
        lo = images.amin(dim=(2, 3), keepdim=True)
        hi = images.amax(dim=(2, 3), keepdim=True)
        return ((images - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)

    def config(self) -> dict[str, Any]:
        """Options needed to rebuild this encoder (stored in checkpoints)."""
        return {}

    def weights_id(self) -> str:
        """Identifies the weights (feature-cache key): 'random', a source name, or a file hash."""
        return "random"


def factor_grid(n: int, image_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (h, w) with h * w == n whose aspect ratio w / h is closest to the image's (W / H; 1 if unknown)."""
    ratio = 1.0 if image_size is None else image_size[1] / image_size[0]
    pairs = [(h, n // h) for h in range(1, n + 1) if n % h == 0]
    return min(pairs, key=lambda hw: (abs(math.log(hw[1] / hw[0] / ratio)), hw[0]))
