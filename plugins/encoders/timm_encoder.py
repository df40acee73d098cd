"""Every timm backbone as an encoder: one *family* entry, so the 1,300+ timm names (and their pretrained
tags, such as ``vit_base_patch16_224.augreg_in21k``) need no list of their own.

The grid and the pooled vector are found from the model itself rather than from a table of model kinds:
``forward_features`` gives a feature map (NCHW, or NHWC where the model says ``output_fmt == "NHWC"``) or a
token sequence whose first ``num_prefix_tokens`` (class, register, distillation tokens) are not positions;
``forward_head(pre_logits=True)`` gives each model's own pooling (average, class token, attention pool).

A model that does not declare ``num_prefix_tokens`` is checked once, at construction, by one forward pass
of a fixed image against timm's ``forward_intermediates`` (the last stage's spatial map, class tokens
removed): a token sequence whose tail *is* that map gets its leading class tokens cut off (CoaT-Lite,
VOLO); a model whose ``forward_features`` holds no positions (PiT returns only its class token, CoaT a list
of scales) takes its grid from ``forward_intermediates`` when that map has the pooled vector's width;
anything else (CrossViT's two branches of different widths) is a ``ZooError`` at construction.

Pretrained weights come from the ``zoo_pretrained_weights`` hook (weight sources are plugins; an offline
source is asked before timm's hub), or from a file the user names.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import timm
import torch
from safetensors.torch import load_file
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
        _check_image_memory(name, self.img_size)
        self.timm_kwargs = dict(timm_kwargs)
        self.model = _create(name, self.img_size, self.timm_kwargs)
        self.feature_dim = int(self.model.num_features)
        # A head that widens the pooled vector (MobileNetV3's conv_head, MambaOut's MLP) would make it
        # disagree with the grid's C, which the decoder contract forbids; such models pool the grid.
        head_dim = getattr(self.model, "head_hidden_size", self.feature_dim)
        self._pool_with_head = head_dim == self.feature_dim
        # How forward_features becomes a grid: tokens to skip in a (B, T, C) sequence, or (for models whose
        # forward_features holds no positions) the last map of forward_intermediates instead.
        self._prefix_tokens = 0
        self._grid_from_intermediates = False
        self._intermediates_norm = True
        self._plan_grid()
        self._grid_shapes: dict[tuple[int, int], tuple[int, int]] = {}  # image (H, W) -> grid (h, w)
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
        if self._grid_from_intermediates:
            x, maps = self.model.forward_intermediates(
                images, indices=1, norm=self._intermediates_norm, intermediates_only=False
            )
            grid = maps[-1].flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)
        else:
            x = self.model.forward_features(images)
            grid = self._grid(x)
        if self._pool_with_head:
            pooled = self.model.forward_head(x, pre_logits=True)
            if pooled.dim() != 2:  # a head configured without pooling
                pooled = grid.mean(dim=1)
        else:
            pooled = grid.mean(dim=1)
        return zoo.Features(grid=grid, pooled=pooled)

    def _grid(self, x: Any) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.dim() == 4:
            if _is_channels_last(self.model, x, self.feature_dim):
                return x.flatten(1, 2)  # (B, H, W, C) -> (B, H*W, C)
            return x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)
        if isinstance(x, torch.Tensor) and x.dim() == 3:
            return x[:, self._prefix_tokens :]
        raise self._no_grid(f"forward_features returns {_describe(x)}")

    def _plan_grid(self) -> None:
        """Decide, once, how ``forward_features`` becomes a grid (see the module docstring).

        A model declaring ``num_prefix_tokens`` (ViT, DeiT, CaiT, XCiT, EVA, ...) is trusted without a
        test run. Others run one fixed, non-random image through ``forward_features`` (eval mode, no
        gradients, nothing drawn from the random generator): a feature map needs nothing more; a token
        sequence or a list is compared with the last map of ``forward_intermediates``."""
        declared = getattr(self.model, "num_prefix_tokens", None)
        if declared is not None:
            self._prefix_tokens = int(declared or 0)
            return
        size = tuple(self.data_config()["input_size"])
        probe = torch.linspace(-1.0, 1.0, steps=math.prod(size)).reshape(1, *size)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                try:
                    out = self.model.forward_features(probe)
                except Exception as exc:  # noqa: BLE001 - any failure of the backbone itself
                    raise ZooError(
                        f"encoder {self.name!r}: a {size[1]}x{size[2]} image does not go through it "
                        f"({type(exc).__name__}: {exc}). Choose another img_size (timm's default for it is "
                        f"{tuple(self.model.pretrained_cfg.get('input_size', ()))[1:]})."
                    ) from exc
                if isinstance(out, torch.Tensor) and out.dim() == 4:
                    return  # a feature map, NCHW or NHWC
                self._plan_tokens(probe, out)
        finally:
            self.model.train(was_training)

    def _plan_tokens(self, probe: torch.Tensor, out: Any) -> None:
        """``out`` (from ``forward_features``) is a token sequence of unknown layout, or not one tensor."""
        final, last_map, norm, why_not = _last_spatial_map(self.model, probe)
        tokens = isinstance(out, torch.Tensor) and out.dim() == 3
        if last_map is not None:
            positions = last_map.flatten(2).transpose(1, 2)  # (1, H*W, C)
            n = positions.shape[1]
            if tokens and out.shape[1] >= n and out.shape[2] == positions.shape[2]:
                if torch.allclose(out[:, out.shape[1] - n :], positions, rtol=1e-4, atol=1e-5):
                    self._prefix_tokens = int(out.shape[1] - n)  # the leading tokens are class tokens
                    return
            if positions.shape[2] == self.feature_dim and _same_output(final, out):
                self._grid_from_intermediates = True
                self._intermediates_norm = norm
                return
            if positions.shape[2] != self.feature_dim:
                why_not = (
                    f"its last spatial map (forward_intermediates) has {positions.shape[2]} channels but its "
                    f"pooled vector has {self.feature_dim}"
                )
            else:
                why_not = "forward_intermediates does not end with the same features as forward_features"
            if tokens and out.shape[1] == n:
                return  # as many tokens as positions: they are the positions (no class token)
        elif tokens and getattr(self.model, "global_pool", None) != "token":
            return  # no class token that the head reads: every token is a position, as before
        raise self._no_grid(f"forward_features returns {_describe(out)} and {why_not}")

    def _no_grid(self, detail: str) -> ZooError:
        return ZooError(
            f"encoder {self.name!r} ({type(self.model).__name__}) has no spatial grid the zoo can use: {detail}. "
            f"The decoders attend over a grid of positions with the pooled vector's width. Pick a backbone whose "
            f"features are a feature map or patch tokens: a CNN (resnet50, convnext_tiny), a ViT/DeiT "
            f"(vit_small_patch16_224, deit_small_patch16_224) or a Swin (swin_tiny_patch4_window7_224)."
        )

    def grid_shape(self, num_positions: int, image_size: tuple[int, int] | None = None) -> tuple[int, int]:
        """(h, w) of the grid, read from the backbone's own spatial map for one blank image of that size
        (run once per size and remembered): the feature map's H×W for a CNN or Swin, the patch grid
        (``forward_intermediates``, class and register tokens left out) for a ViT."""
        size = tuple(image_size) if image_size is not None else tuple(self.data_config()["input_size"][1:])
        if size not in self._grid_shapes:
            self._grid_shapes[size] = self._probe_grid_shape(size)  # type: ignore[index]
        hw = self._grid_shapes[size]  # type: ignore[index]
        if hw[0] * hw[1] != num_positions:
            raise ZooError(
                f"encoder {self.name!r}: a {size[0]}x{size[1]} image gives a {hw[0]}x{hw[1]} grid, not "
                f"{num_positions} positions; were these features made from images of another size?"
            )
        return hw

    def _probe_grid_shape(self, size: tuple[int, int]) -> tuple[int, int]:
        probe = torch.zeros(1, 3, *size, device=next(self.model.parameters()).device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                if self._grid_from_intermediates:
                    _, maps = self.model.forward_intermediates(
                        probe, indices=1, norm=self._intermediates_norm, intermediates_only=False
                    )
                    return tuple(maps[-1].shape[-2:])  # type: ignore[return-value]
                x = self.model.forward_features(probe)
                if x.dim() == 4:
                    hw = x.shape[1:3] if _is_channels_last(self.model, x, self.feature_dim) else x.shape[2:4]
                    return (int(hw[0]), int(hw[1]))
                n = self._grid(x).shape[1]
                _, last_map, _, _ = _last_spatial_map(self.model, probe)
                if last_map is not None and last_map.shape[-2] * last_map.shape[-1] == n:
                    return (int(last_map.shape[-2]), int(last_map.shape[-1]))
                return zoo.Encoder.grid_shape(self, n, size)  # the aspect-ratio rule
        finally:
            self.model.train(was_training)

    def unnormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Undo the transform's normalisation with the backbone's own mean and std."""
        cfg = self.data_config()
        mean = torch.tensor(cfg["mean"], dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(cfg["std"], dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return (images * std + mean).clamp(0, 1)

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
        answered, since ``weights_id`` (the feature-cache key) records it. As pluggy would, each source is
        called with only the arguments its hookimpl declares (a source may take just ``encoder_name``).

        A source that fails stops the load: its ``ZooError`` (which already says what to do) propagates as
        it is, and any other exception becomes a ``ZooError`` naming the source and the encoder. The next
        source is deliberately *not* tried then: silently loading other weights than the ones a source meant
        to provide would change the features without a word."""
        hook = zoo.get_plugin_manager().hook.zoo_pretrained_weights
        impls = [
            i for i in reversed(hook.get_hookimpls()) if not (i.hookwrapper or getattr(i, "wrapper", False))
        ]
        offered = {"encoder_name": self.name, "model": self.model}
        tried: list[str] = []
        for impl in impls:
            tried.append(impl.plugin_name)
            state = _ask_weight_source(impl, offered, self.name)
            if state is not None:
                if not isinstance(state, Mapping):
                    raise ZooError(
                        f"weight source {impl.plugin_name!r} returned a {type(state).__name__} for encoder "
                        f"{self.name!r}, not a state dict (name → tensor) or None. The plugin is broken: "
                        f"report it to its authors, or uninstall it to let the other sources answer."
                    )
                load_timm_state_dict(self.model, state, f"weight source {impl.plugin_name!r}", self.name)
                return impl.plugin_name
        raise ZooError(
            f"no pretrained weights for encoder {self.name!r}: every weight source returned none (asked: "
            f"{', '.join(tried) or 'no source is installed'}). timm lists no pretrained weights for that "
            f"name, or a source that needs the network cannot reach its hub offline. Try a name with a "
            f"pretrained tag (`zoo list encoders '{self.name.split('.')[0]}.*'`), give a weights file "
            f"(`--pretrained PATH`; `pretrained=PATH` in Python), or install a plugin that provides them."
        )

    def _load_from_file(self, path: Path) -> str:
        state = load_weights_file(path)
        load_timm_state_dict(self.model, state, f"weights file {path}", self.name)
        return "file:" + _sha256(path)[:16]


# -- helpers ------------------------------------------------------------------------------------------
def _last_spatial_map(model: nn.Module, images: torch.Tensor) -> tuple[Any, torch.Tensor | None, bool, str]:
    """``forward_intermediates``' final features, last NCHW map (timm strips class tokens from it) and the
    ``norm`` flag that worked, or (None, None, False, why) when the model offers no such map."""
    fn = getattr(model, "forward_intermediates", None)
    if fn is None:
        return None, None, False, "timm offers no forward_intermediates for it to find the positions"
    why = ""
    for norm in (True, False):  # some models (Hiera) refuse norm=True
        try:
            final, maps = fn(images, indices=1, norm=norm, intermediates_only=False)
        except Exception as exc:  # noqa: BLE001 - NotImplementedError, AssertionError, TypeError, ...
            why = f"forward_intermediates fails ({type(exc).__name__}: {exc})"
            continue
        last = maps[-1] if isinstance(maps, (list, tuple)) and maps else None
        if isinstance(last, torch.Tensor) and last.dim() == 4:
            return final, last, norm, ""
        return None, None, False, f"forward_intermediates gives {_describe(maps)}, not a (B, C, H, W) map"
    return None, None, False, why


def _same_output(a: Any, b: Any) -> bool:
    """The same tensors (or lists/tuples/dicts of them), to float tolerance."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_output(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same_output(a[k], b[k]) for k in a)
    return False


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, (list, tuple)):
        return f"a {type(x).__name__} of {len(x)} ({', '.join(_describe(v) for v in x)})"
    if isinstance(x, Mapping):
        return f"a dict with keys {sorted(map(str, x))}"
    return f"a {type(x).__name__}"


def _ask_weight_source(impl: Any, offered: Mapping[str, Any], encoder_name: str) -> Any:
    """Call one ``zoo_pretrained_weights`` hookimpl the way pluggy does: with the arguments it declares
    (``impl.argnames``), positionally. Its exceptions become ``ZooError`` naming the source."""
    source = impl.plugin_name
    unknown = [a for a in impl.argnames if a not in offered]
    if unknown:  # pluggy's registration check normally refuses such a hookimpl already
        raise ZooError(
            f"weight source {source!r} asks for argument(s) {', '.join(unknown)} that zoo_pretrained_weights "
            f"does not provide (it offers {', '.join(offered)}); fix or uninstall that plugin."
        )
    try:
        return impl.function(*(offered[a] for a in impl.argnames))
    except ZooError:
        raise  # a source's own error already names the problem and what to do
    except Exception as exc:  # noqa: BLE001 - third-party code may raise anything
        raise ZooError(
            f"weight source {source!r} failed while loading pretrained weights for encoder "
            f"{encoder_name!r} ({type(exc).__name__}: {exc}). The plugin that provides it is broken for this "
            f"encoder: report it to its authors, uninstall or disable it (other weight sources are then asked), "
            f"or give a weights file (`--pretrained PATH`; `pretrained=PATH` in Python)."
        ) from exc


def _normalise_img_size(img_size: Any) -> tuple[int, int] | None:
    if img_size is None:
        return None
    if isinstance(img_size, int) and img_size > 0:
        return (img_size, img_size)
    if isinstance(img_size, (tuple, list)) and len(img_size) == 2 and all(isinstance(s, int) for s in img_size):
        return (int(img_size[0]), int(img_size[1]))
    raise ZooError(f"img_size must be a positive int or (height, width), not {img_size!r}")


def _memory_bytes() -> int | None:
    """This machine's physical memory (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _check_image_memory(name: str, img_size: tuple[int, int] | None) -> None:
    """Refuse an ``img_size`` whose one image (3 x H x W float32) takes more than a quarter of this machine's
    memory (16 GiB where it is unknown) before anything is allocated: building the encoder runs one image of
    that size through it, and a size of 10^6 (an edited checkpoint, a typo) would ask for terabytes."""
    if img_size is None:
        return
    need = 3 * img_size[0] * img_size[1] * 4
    memory = _memory_bytes()
    limit = memory // 4 if memory else 16 * 1024**3
    if need > limit:
        raise ZooError(
            f"encoder {name!r}: img_size {img_size[0]}x{img_size[1]} is too large: one image of that size takes "
            f"{need / 1024**3:,.1f} GiB (3 x H x W float32), more than a quarter of this machine's memory "
            f"({(memory or 4 * limit) / 1024**3:,.1f} GiB). Choose a size such as 224 (timm's default for it is "
            f"{tuple(timm.models.get_pretrained_cfg_value(name, 'input_size') or ())[1:] or 'unknown'})."
        )


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
