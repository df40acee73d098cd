"""What ``CaptionModel.generate`` accepts as images, turned into the batch its encoder reads.

People pass what they have, as to Hugging Face's image-to-text pipeline: a PIL image, a path, a uint8
array from numpy or OpenCV-style code, a list of those, or a tensor batch they transformed themselves.
:func:`image_batch` turns any of these into one (B, 3, H, W) float batch with the encoder's eval transform,
and names what was passed and what is accepted when it is none of them (rather than the ``conv2d()``
``TypeError`` a PIL image met inside the encoder before).

Which tensors are which: a **floating-point** tensor is taken as already transformed (``model.transform()``
output): (B, 3, H, W), or one (3, H, W) image. A **uint8** tensor is raw pixels in torchvision's layout
((3, H, W) or (B, 3, H, W), as ``torchvision.io.read_image`` gives) and is transformed like a PIL image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import PIL.Image
import torch

from zoo.data.datasets import open_image, to_rgb
from zoo.errors import DataError

#: what the error message lists as accepted
ACCEPTED = (
    "a PIL image, a path (str or pathlib.Path), a uint8 numpy array (H, W), (H, W, 3) or (H, W, 4) "
    "(or (N, H, W, C) for several), a list of those, a uint8 tensor (3, H, W) as torchvision reads images, "
    "or a float tensor batch (B, 3, H, W) already transformed with model.transform()"
)


class ImageInputError(DataError, TypeError):
    """Something passed as images that is none of the accepted kinds; the message names it."""


def image_batch(
    images: Any, transform: Callable[[PIL.Image.Image], torch.Tensor], device: torch.device | str | None = None
) -> torch.Tensor:
    """``images`` (any accepted kind, see the module docstring) as one (B, 3, H, W) float batch on
    ``device``; PIL images, paths and arrays go through ``transform`` (the encoder's eval transform).

    A single image is a batch of one. Paths are decoded by :func:`zoo.data.open_image` (pixel limits, a
    ``DataError`` naming a missing or corrupt file)."""
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        batch = _transformed(images, "")
        batch = batch.unsqueeze(0) if batch.ndim == 3 else batch  # one transformed image
    elif isinstance(images, np.ndarray) and images.ndim == 4:
        batch = torch.stack([_one(a, transform, f"image {i} of the array is ") for i, a in enumerate(images)])
    elif isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 4:
        batch = torch.stack([_one(t, transform, f"image {i} of the tensor is ") for i, t in enumerate(images)])
    elif isinstance(images, (list, tuple)):
        if not images:
            kind = type(images).__name__
            raise ImageInputError(f"model.generate() got an empty {kind}: no images. It takes {ACCEPTED}.")
        rows = [_one(x, transform, f"item {i} of the {type(images).__name__} is ") for i, x in enumerate(images)]
        for i, row in enumerate(rows[1:], start=1):
            if row.shape != rows[0].shape:
                raise ImageInputError(
                    f"model.generate(): item {i} of the {type(images).__name__} is {tuple(row.shape)} after the "
                    f"transform but item 0 is {tuple(rows[0].shape)}; images transformed by hand must have one "
                    f"size (pass PIL images or paths and the encoder's transform makes them so)"
                )
        batch = torch.stack(rows)
    else:
        batch = _one(images, transform, "").unsqueeze(0)
    return batch if device is None else batch.to(device)


def _one(x: Any, transform: Callable[[PIL.Image.Image], torch.Tensor], where: str) -> torch.Tensor:
    """One image as a transformed (3, H, W) tensor; ``where`` says which item it was, for the error."""
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return _transformed(x, where, single=True)
    return transform(to_rgb(_pil(x, where)))


def _pil(x: Any, where: str) -> PIL.Image.Image:
    if isinstance(x, PIL.Image.Image):
        return x
    if isinstance(x, (str, os.PathLike)):
        text = os.fspath(x)
        if isinstance(text, str) and text.split("://", 1)[0].lower() in ("http", "https", "ftp", "s3", "gs"):
            raise ImageInputError(
                f"model.generate(): {where or ''}a URL ({text}); the zoo reads no network. Download the image "
                f"and pass its path, or open it as a PIL image."
            )
        return open_image(Path(os.fsdecode(text)))
    if isinstance(x, np.ndarray) and x.dtype == np.uint8 and _pixel_layout(x.shape):
        return PIL.Image.fromarray(x[..., 0] if x.ndim == 3 and x.shape[2] == 1 else x)
    if isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.ndim == 3 and x.shape[0] in (1, 3, 4):
        return PIL.Image.fromarray(x.permute(1, 2, 0).squeeze(-1).cpu().numpy() if x.shape[0] == 1
                                   else x.permute(1, 2, 0).cpu().numpy())
    raise _refused(x, where)


def _refused(x: Any, where: str) -> ImageInputError:
    """The error for ``x``: what it is (and which item, ``where``), then what is accepted."""
    what = f"model.generate(): {where}{describe(x)}" if where else f"model.generate() got {describe(x)}"
    return ImageInputError(f"{what}. It takes {ACCEPTED}.")


def _pixel_layout(shape: Sequence[int]) -> bool:
    return len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4))


def _transformed(t: torch.Tensor, where: str, single: bool = False) -> torch.Tensor:
    """An already-transformed float image (3, H, W) or batch (B, 3, H, W), as it is."""
    if t.ndim == 3 or (t.ndim == 4 and not single):
        return t
    raise _refused(t, where)


def describe(x: Any) -> str:
    """What ``x`` is, in a few words: "an int (42)", "a float64 array of shape (8, 8, 3)"."""
    name = type(x).__name__
    if isinstance(x, np.ndarray):
        return f"a {x.dtype} array of shape {tuple(x.shape)}"
    if isinstance(x, torch.Tensor):
        return f"a {str(x.dtype).replace('torch.', '')} tensor of shape {tuple(x.shape)}"
    if isinstance(x, (list, tuple, dict, set)) and not x:
        return f"an empty {name}"
    article = "an" if name[:1].lower() in "aeiou" else "a"
    if isinstance(x, (int, float, complex, bool)):
        return f"{article} {name} ({x!r})"
    return f"{article} {name}"
