"""Attention figures: the image the encoder saw, one panel per generated token, the decoder's attention
over the grid upsampled smoothly onto it (``zoo caption --attention out.png``; strips in reports).

How a grid lies on the image: grid position i is row ``i // w``, column ``i % w`` of the (h, w) grid
(``CaptionAttention.grid_shape``, from the encoder); cell (r, c) covers the pixels
[r·H/h, (r+1)·H/h) × [c·W/w, (c+1)·W/w) of the transformed image. Bilinear interpolation with
``align_corners=False`` puts each cell's weight at its cell's centre and blends smoothly between centres,
so a one-hot map peaks on its own cell, for a 7×7 CNN map, a 14×14 ViT patch grid (class token already
left out by the encoder) or a non-square map alike. The image is the transformed one, un-normalised
(``Encoder.unnormalize``), so the map covers exactly the pixels the model saw after resize and crop.

Which part of the image that is: :func:`encoder_crop` reads the encoder's transform (timm's eval pipeline
resizes the shorter side to ``size / crop_pct`` and takes a centre crop of ``size``, so shapes at the edges
are cut) and gives the crop as a box on the original image and in words; the evaluation report draws its
thumbnails and strips on the whole image with the part outside that box dimmed, and says which crop it was.

Each panel's colours are scaled to its own largest weight (so a diffuse map still shows where it leans);
the panel title gives that largest weight, so peaked and diffuse maps can still be told apart.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.generation.attention import CaptionAttention
from zoo.models.caption_model import attention_for_images
from zoo.views.figures import agg_figure, check_figure_path, figure_bytes, save_figure


#: transforms that leave the geometry alone (tensors, dtypes, normalisation)
_NO_GEOMETRY = {"ToTensor", "MaybeToTensor", "PILToTensor", "MaybePILToTensor", "Normalize", "ConvertImageDtype",
                "ToDtype", "ToImage", "RGBTransform"}


@dataclass(frozen=True)
class EncoderCrop:
    """The part of an image an encoder's transform keeps: ``box`` = (left, top, right, bottom) in pixels
    of the original image (it may reach outside it where a crop pads), and what was done, in words."""

    box: tuple[float, float, float, float]
    image_size: tuple[int, int]  # (W, H) of the original
    description: str

    @property
    def cuts(self) -> bool:
        """Whether anything of the image lies outside the crop (more than half a pixel)."""
        W, H = self.image_size
        x0, y0, x1, y1 = self.box
        return x0 > 0.5 or y0 > 0.5 or x1 < W - 0.5 or y1 < H - 0.5

    def relative(self) -> tuple[float, float, float, float]:
        """The box as fractions of the image's width and height."""
        W, H = self.image_size
        x0, y0, x1, y1 = self.box
        return (x0 / W, y0 / H, x1 / W, y1 / H)


def _steps(transform: Any) -> list[Any] | None:
    """The transform's steps in order (through ``Compose`` and wrappers with ``.inner``/``.transforms``)."""
    inner = getattr(transform, "inner", None)
    if inner is not None:
        return _steps(inner)
    if isinstance(getattr(transform, "transforms", None), (list, tuple)):
        out: list[Any] = []
        for t in transform.transforms:
            got = _steps(t)
            if got is None:
                return None
            out += got
        return out
    return [transform]


def _pair(size: Any) -> tuple[int, int] | None:
    """(h, w) of a torchvision size argument, or None for "the shorter side" (an int or [int])."""
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    return None


def encoder_crop(transform: Any, image_size: tuple[int, int]) -> EncoderCrop | None:
    """Where the pixels of ``transform(image)`` come from for an image of ``image_size`` (W, H): the box on
    the original image and the steps in words ("centre crop 224×224 of the image resized to 256 on its
    px on its shorter side"). Reads torchvision's ``Resize`` and ``CenterCrop`` (what timm's eval transform is made
    of, inside ``Compose``); None for a transform with any other geometric step (it cannot be told)."""
    steps = _steps(transform)
    if steps is None:
        return None
    W, H = image_size
    w, h = float(W), float(H)  # current size
    left, top, sx, sy = 0.0, 0.0, 1.0, 1.0  # current pixel (x, y) ↔ original (left + x·sx, top + y·sy)
    said: list[str] = []
    for t in steps:
        kind = type(t).__name__
        if kind in _NO_GEOMETRY:
            continue
        if kind == "Resize":
            hw = _pair(t.size)
            if hw is None:
                short_to = int(t.size[0] if isinstance(t.size, (list, tuple)) else t.size)
                short, long = min(w, h), max(w, h)
                new_short, new_long = short_to, int(short_to * long / short)
                if t.max_size is not None and new_long > t.max_size:
                    new_short, new_long = int(t.max_size * new_short / new_long), t.max_size
                nw, nh = (new_short, new_long) if w <= h else (new_long, new_short)
                said.append(f"resized to {short_to} px on its shorter side")
            else:
                nh, nw = hw
                said.append(f"resized to {nw}×{nh}")
            sx, sy = sx * w / nw, sy * h / nh
            w, h = float(nw), float(nh)
        elif kind in ("CenterCrop", "CenterCropOrPad"):
            hw = _pair(t.size)
            if hw is None:
                side = int(t.size[0] if isinstance(t.size, (list, tuple)) else t.size)
                hw = (side, side)
            ch, cw = hw
            dx = round((w - cw) / 2.0) if cw <= w else -((cw - w) // 2)
            dy = round((h - ch) / 2.0) if ch <= h else -((ch - h) // 2)
            left, top = left + dx * sx, top + dy * sy
            w, h = float(cw), float(ch)
            said.append(f"centre crop {cw}×{ch}")
        else:
            return None
    words = "the image as it is" if not said else said[-1] + "".join(
        f" of the image {s}" if i == 0 else f", {s}" for i, s in enumerate(reversed(said[:-1])))
    if said and said[-1].startswith("resized"):
        words = "the image " + said[-1] + "".join(f", after {s}" for s in reversed(said[:-1]))
    return EncoderCrop((left, top, left + w * sx, top + h * sy), (int(W), int(H)), words)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(T, h, w) grid weights → (T, H, W), bilinear between cell centres (see the module docstring)."""
    x = maps.float().unsqueeze(1)
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False).squeeze(1)


def attention_figure(
    image: torch.Tensor | np.ndarray, attention: CaptionAttention, *, columns: int | None = 5,
    panel_inches: float = 1.9, title: bool = True,
) -> Any:
    """A matplotlib Figure: ``image`` (H, W, 3) in [0, 1] (or (3, H, W)) with one panel per token.
    ``columns=None`` puts all panels on one row (a strip)."""
    img = _hwc(image)
    H, W = img.shape[:2]
    heat = upsample(attention.maps(), (H, W)).numpy()
    n = len(attention.words)
    cols = n if columns is None else max(1, min(columns, n))
    rows = math.ceil(n / cols) if n else 1
    aspect = H / W
    # A long caption (20 words) is wider than the figure: wrap it to the figure's width (about 10
    # characters an inch at 11 pt) rather than let the title run off both sides.
    heading = textwrap.wrap(attention.caption, width=max(10, int(cols * panel_inches * 10))) if title else []
    heading_in = (0.45 + 0.2 * max(len(heading) - 1, 0)) if title else 0
    fig = agg_figure(cols * panel_inches, rows * panel_inches * aspect + heading_in + 0.25 * rows)
    axes = np.atleast_1d(fig.subplots(rows, max(cols, 1), squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for t, (ax, word) in enumerate(zip(axes, attention.words)):
        peak = float(attention.weights[t].max())
        ax.imshow(img, interpolation="bilinear")
        ax.imshow(heat[t], cmap="inferno", alpha=0.6, vmin=0.0, vmax=max(float(heat[t].max()), 1e-12),
                  interpolation="bilinear", extent=(-0.5, W - 0.5, H - 0.5, -0.5))
        ax.set_title(f"{word}\nmax {peak:.2f}", fontsize=9, linespacing=1.1)
    if title:
        fig.suptitle("\n".join(heading) or "(empty caption)", fontsize=11)
    return fig


def save_attention_figure(
    path: str | Path, image: torch.Tensor | np.ndarray, attention: CaptionAttention, **kwargs: Any
) -> Path:
    """Write the figure (format from the suffix: .png, .svg, .pdf, .jpg), atomically."""
    return save_figure(attention_figure(image, attention, **kwargs), path, dpi=110, what="attention figure")


def attention_strip(
    image: torch.Tensor | np.ndarray, attention: CaptionAttention, *, panel_inches: float = 1.0,
    fmt: str = "png", dpi: int = 90,
) -> bytes:
    """One row of panels, encoded (PNG or JPEG bytes), small enough to embed many in an HTML page."""
    fig = attention_figure(image, attention, columns=None, panel_inches=panel_inches, title=False)
    return figure_bytes(fig, fmt=fmt, dpi=dpi)


def _hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    return np.clip(arr, 0.0, 1.0)


def write_attention_figures(
    model: Any, images: list[Any], files: list[str], out: str | Path, **generate_kwargs: Any
) -> list[tuple[str, Path]]:
    """``zoo caption --attention OUT``: one figure per image (OUT itself for one image, else
    OUT-<n>-<image stem><suffix>); returns (caption, figure path) per image."""
    out = check_figure_path(out, "attention figure")
    done = []
    for i, (view, att) in enumerate(attention_for_images(model, images, **generate_kwargs)):
        path = out if len(files) == 1 else out.with_name(f"{out.stem}-{i + 1}-{Path(files[i]).stem}{out.suffix}")
        done.append((att.caption, save_attention_figure(path, view, att)))
    return done
