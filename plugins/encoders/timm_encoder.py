"""Every timm backbone as an encoder: one *family* entry, so the 1,300+ timm names (and their pretrained
tags, such as ``vit_base_patch16_224.augreg_in21k``) need no list of their own.

The grid and the pooled vector are found from the model itself rather than from a table of model kinds:
``forward_features`` gives a feature map (NCHW, or NHWC where the model says ``output_fmt == "NHWC"``) or a
token sequence whose first ``num_prefix_tokens`` (class, register, distillation tokens) are not positions;
``forward_head(pre_logits=True)`` gives each model's own pooling (average, class token, attention pool).

Pretrained weights come from the ``zoo_pretrained_weights`` hook (weight sources are plugins; an offline
source is asked before timm's hub), or from a file the user names.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import timm
import torch
from timm.data import create_transform, resolve_data_config
from torch import nn

import zoo
from zoo.errors import ZooError

__all__ = ["TimmEncoder", "RGBTransform", "load_weights_file", "load_timm_state_dict", "zoo_register"]

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
# Prefixes a saved state dict may carry around timm's own keys: our encoder's ``model.``, a caption
# checkpoint's ``encoder.model.``, DataParallel's ``module.``.
_WRAPPER_PREFIXES = ("encoder.model.", "model.", "module.")


class RGBTransform:
    """Converts any PIL image (greyscale, CMYK, palette: COCO has all of them) to RGB, then applies the
    backbone's transform. A class, not a lambda, so data loader workers can pickle it; its repr includes
    the inner transform's, because the feature cache keys on that repr."""

    def __init__(self, inner: Callable[[Any], torch.Tensor]) -> None:
        self.inner = inner

    def __call__(self, image: Any) -> torch.Tensor:
        if hasattr(image, "mode") and image.mode != "RGB":
            image = image.convert("RGB")
        return self.inner(image)

    def __repr__(self) -> str:
        return f"RGBTransform({self.inner!r})"


class TimmEncoder(zoo.Encoder):
    """A timm backbone: grid (B, N, C) from its feature map or patch tokens, pooled (B, C) from its head.

    ``pretrained``: False (random init), True (the first weight source that has weights for ``name``), or
    a path to a ``.safetensors``/``.pth``/``.pt``/``.bin`` state dict in timm's layout. ``freeze``: no
    gradients and the backbone stays in eval mode. ``img_size``: the input size (int or (H, W)); models
    that take it (ViTs) are built for it, the others just get a transform of that size. Other keyword
    arguments go to ``timm.create_model`` (e.g. ``drop_path_rate``).
    """

    def __init__(
        self,
        name: str,
        pretrained: bool | str | os.PathLike[str] = False,
        freeze: bool = False,
        img_size: int | tuple[int, int] | list[int] | None = None,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        self.name = name
        self.img_size = _normalise_img_size(img_size)
        self.timm_kwargs = dict(timm_kwargs)
        self.model = _create(name, self.img_size, self.timm_kwargs)
        self.feature_dim = int(self.model.num_features)
        # A head that widens the pooled vector (MobileNetV3's conv_head, MambaOut's MLP) would make it
        # disagree with the grid's C, which the decoder contract forbids; such models pool the grid.
        head_dim = getattr(self.model, "head_hidden_size", self.feature_dim)
        self._pool_with_head = head_dim == self.feature_dim
        self._weights_id = "random"
        if pretrained is True:
            self._weights_id = self._load_from_sources()
        elif isinstance(pretrained, (str, os.PathLike)):
            self._weights_id = self._load_from_file(Path(pretrained))
        elif pretrained is not False:
            raise ZooError(
                f"encoder {name!r}: pretrained must be True, False or a weights file path, not {pretrained!r}"
            )
        self.frozen = bool(freeze)
        if self.frozen:
            for p in self.model.parameters():
                p.requires_grad_(False)
            self.model.eval()

    # -- features -------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> zoo.Features:
        x = self.model.forward_features(images)
        grid = self._grid(x)
        if self._pool_with_head:
            pooled = self.model.forward_head(x, pre_logits=True)
            if pooled.dim() != 2:  # a head configured without pooling
                pooled = grid.mean(dim=1)
        else:
            pooled = grid.mean(dim=1)
        return zoo.Features(grid=grid, pooled=pooled)

    def _grid(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            if _is_channels_last(self.model, x, self.feature_dim):
                return x.flatten(1, 2)  # (B, H, W, C) -> (B, H*W, C)
            return x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)
        if x.dim() == 3:
            return x[:, int(getattr(self.model, "num_prefix_tokens", 0) or 0) :]
        raise ZooError(
            f"encoder {self.name!r}: forward_features returned shape {tuple(x.shape)}; only feature maps "
            f"(B, C, H, W)/(B, H, W, C) and token sequences (B, T, C) can become a grid. Pick another backbone."
        )

    # -- data -----------------------------------------------------------------------------------------
    def data_config(self) -> dict[str, Any]:
        """timm's data config for this backbone (mean, std, interpolation, crop), at ``img_size`` if set."""
        args: dict[str, Any] = {}
        if self.img_size is not None:
            args["input_size"] = (3, *self.img_size)
        return resolve_data_config(args, model=self.model)

    def transform(self, train: bool = False) -> Callable[[Any], torch.Tensor]:
        """PIL image → normalised tensor, as the backbone was trained (timm's eval or train pipeline)."""
        return RGBTransform(create_transform(**self.data_config(), is_training=train))

    # -- modes ----------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "TimmEncoder":
        """A frozen backbone stays in eval mode whatever the parent asks: its batch-norm statistics
        must not drift while a decoder trains on its features."""
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    # -- identity -------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON options that rebuild this encoder (weights come from the checkpoint, not from here)."""
        img: Any = self.img_size
        if img is not None:
            img = img[0] if img[0] == img[1] else list(img)
        cfg: dict[str, Any] = {"img_size": img, "freeze": self.frozen, **self.timm_kwargs}
        try:
            json.dumps(cfg)
        except TypeError as exc:
            raise ZooError(
                f"encoder {self.name!r}: timm option(s) {sorted(self.timm_kwargs)} cannot be stored in a "
                f"checkpoint ({exc}); pass strings or numbers (e.g. act_layer='gelu') instead of objects."
            ) from exc
        return cfg

    def weights_id(self) -> str:
        return self._weights_id

    # -- weights --------------------------------------------------------------------------------------
    def _load_from_sources(self) -> str:
        """Ask each weight source in pluggy's call order (tryfirst first, timm's hub last).

        The hook is firstresult; the callers are walked here one by one only to learn *which* source
        answered, since ``weights_id`` (the feature-cache key) records it."""
        hook = zoo.get_plugin_manager().hook.zoo_pretrained_weights
        impls = [
            i for i in reversed(hook.get_hookimpls()) if not (i.hookwrapper or getattr(i, "wrapper", False))
        ]
        tried: list[str] = []
        for impl in impls:
            tried.append(impl.plugin_name)
            state = impl.function(encoder_name=self.name, model=self.model)
            if state is not None:
                load_timm_state_dict(self.model, state, f"weight source {impl.plugin_name!r}", self.name)
                return impl.plugin_name
        raise ZooError(
            f"no pretrained weights for encoder {self.name!r}: every weight source returned none (asked: "
            f"{', '.join(tried) or 'no source is installed'}). timm lists no pretrained weights for that "
            f"name, or a source that needs the network cannot reach its hub offline. Try a name with a "
            f"pretrained tag (`zoo list encoders '{self.name.split('.')[0]}.*'`), pass pretrained=PATH to a "
            f"weights file, or install a plugin that provides them."
        )

    def _load_from_file(self, path: Path) -> str:
        state = load_weights_file(path)
        load_timm_state_dict(self.model, state, f"weights file {path}", self.name)
        return "file:" + _sha256(path)[:16]


# -- helpers ------------------------------------------------------------------------------------------
def _normalise_img_size(img_size: Any) -> tuple[int, int] | None:
    if img_size is None:
        return None
    if isinstance(img_size, int) and img_size > 0:
        return (img_size, img_size)
    if isinstance(img_size, (tuple, list)) and len(img_size) == 2 and all(isinstance(s, int) for s in img_size):
        return (int(img_size[0]), int(img_size[1]))
    raise ZooError(f"img_size must be a positive int or (height, width), not {img_size!r}")


def _create(name: str, img_size: tuple[int, int] | None, kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model`` without its classifier. ``img_size`` is offered first; a model whose
    constructor rejects it (CNNs take any size) is built without, and only the transform changes."""
    base = {"pretrained": False, "num_classes": 0, **kwargs}
    if img_size is not None:
        try:
            return _timm_create(name, {**base, "img_size": img_size})
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise _bad_kwargs(name, kwargs, exc) from exc
    try:
        return _timm_create(name, base)
    except TypeError as exc:
        raise _bad_kwargs(name, kwargs, exc) from exc


def _timm_create(name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as exc:  # timm: "Unknown model (...)" or an invalid pretrained tag
        raise ZooError(f"encoder {name!r}: timm cannot build it ({exc}). See `zoo list encoders`.") from exc


def _bad_kwargs(name: str, kwargs: dict[str, Any], exc: Exception) -> ZooError:
    return ZooError(f"encoder {name!r}: timm rejected the options {sorted(kwargs)}: {exc}")


def _is_channels_last(model: nn.Module, x: torch.Tensor, channels: int) -> bool:
    """NHWC if the model says so (Swin, MambaOut set ``output_fmt``); otherwise by which axis holds C."""
    fmt = getattr(model, "output_fmt", None)
    if fmt is not None:
        return str(getattr(fmt, "value", fmt)).upper() == "NHWC"
    return x.shape[1] != channels and x.shape[-1] == channels


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_weights_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` (safetensors) or ``.pth``/``.pt``/``.bin`` (``torch.load`` with
    ``weights_only=True``: tensors only, never arbitrary pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise ZooError(
            f"weights file {path} does not exist{' (it is a folder)' if path.is_dir() else ''}; give the path "
            f"to a {'/'.join(WEIGHT_FILE_SUFFIXES)} state dict, or pretrained=True for the weight sources."
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        elif suffix in WEIGHT_FILE_SUFFIXES:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise ZooError(
                f"weights file {path}: unknown format {suffix!r}; use one of {', '.join(WEIGHT_FILE_SUFFIXES)}"
            )
    except ZooError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors/pickle raise many types for a bad file
        raise ZooError(
            f"weights file {path} could not be read ({type(exc).__name__}: {exc}). It must be a state dict "
            f"of tensors; pickles holding objects are refused (weights_only)."
        ) from exc
    # Training checkpoints often wrap the state dict: {"state_dict": {...}} or {"model": {...}}.
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ZooError(f"weights file {path} does not hold a state dict (name → tensor)")
    return dict(obj)


def load_timm_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], origin: str, name: str) -> None:
    """Load ``state`` (timm layout) into ``model`` strictly, except the classifier keys that
    ``num_classes=0`` removed; any other mismatch is an error naming the keys."""
    own = model.state_dict()
    state = _strip_wrapper_prefix(dict(state), own)
    classifiers = _classifier_prefixes(model)
    state = {
        k: v for k, v in state.items() if k in own or not any(k.startswith(c + ".") for c in classifiers)
    }
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_few(unexpected)}")
        if misshaped:
            parts.append(f"{len(misshaped)} shape mismatch(es) (file vs model): {_few(misshaped)}")
        raise ZooError(
            f"{origin} does not fit encoder {name!r}: " + "; ".join(parts) + ". The weights must be a timm "
            f"state dict for exactly this architecture (same name, img_size and options)."
        )
    model.load_state_dict(state, strict=True)


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", … (+{len(items) - n} more)" if len(items) > n else "")


def _strip_wrapper_prefix(state: dict[str, torch.Tensor], own: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    if not state or any(k in own for k in state):
        return state
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    cls = cfg.get("classifier") or "classifier"
    return (cls,) if isinstance(cls, str) else tuple(cls)


@zoo.hookimpl
def zoo_register(registry: Any) -> None:
    registry.add_encoder_family(
        "timm",
        TimmEncoder,
        list_names=_all_timm_names,
        contains=timm.is_model,
    )


def _all_timm_names() -> list[str]:
    """Architectures and every pretrained tag (``arch.tag``): both are valid encoder names."""
    return sorted(set(timm.list_models()) | set(timm.list_pretrained()))
