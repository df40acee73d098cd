"""Training settings: :class:`TrainConfig` (``zoo train --set train.KEY=VALUE``), every value converted to
its setting's type and checked by name before anything runs; and :class:`TrainResult`, what a run returns."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from zoo.data.feature_cache import DTYPES as CACHE_DTYPES
from zoo.errors import ZooError


@dataclass
class TrainConfig:
    """Training settings (``zoo train --set train.KEY=VALUE``). :meth:`from_dict` converts each value to
    its field's type and checks its range (``_LIMITS``; ``device`` must exist here), so a bad setting is a
    ZooError naming ``train.KEY``, the allowed values and the default, before anything runs."""

    steps: int | None = None  # total optimiser steps; or give epochs
    epochs: int | None = None
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100  # linear warm-up; at most a tenth of the run's total steps is used (see schedule.lr_at)
    label_smoothing: float = 0.0
    grad_clip: float = 2.0
    max_caption_len: int = 16
    seed: int = 0
    num_workers: int = 0
    eval_every: int | None = None  # steps between validations; default once per epoch
    checkpoint_every: int | None = None  # steps between resumable states; default = eval_every
    val_images: int = 500  # validation subset size (greedy CIDEr-D)
    val_beam_size: int = 1
    log_every: int = 20
    cache_features: bool = True  # frozen encoder → train from the feature cache
    cache_dtype: str = "float32"  # or float16 (half the disk)
    compile: bool = False
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    device: str = "auto"  # auto (a GPU when there is one), cpu, cuda, cuda:N, mps
    progress: bool = True
    objective: str = "xe"  # a registered training objective (`zoo list objectives`); options: objective.KEY
    scst_after: int | None = None  # steps of xe before switching to train.objective within this run
    skip_bad_images: bool = False  # drop images that cannot be decoded (named in run.json) instead of failing

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name: f for f in fields(cls)}
        unknown = set(d) - set(known)
        if unknown:
            name = sorted(unknown)[0]
            close = difflib.get_close_matches(name, list(known), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ZooError(f"unknown training setting train.{name}.{hint} Settings: {', '.join(known)}")
        defaults = cls()
        return cls(**{k: _setting(k, v, getattr(defaults, k), known[k].type) for k, v in d.items()})


def _setting(name: str, value: Any, default: Any, annotation: Any) -> Any:
    """``value`` as the type of setting ``name`` (YAML reads ``1e-3`` as a string; JSON has no ints vs
    floats), or a ZooError naming ``train.NAME``. ``annotation`` is the field's type as written."""
    text = str(annotation)
    optional = "None" in text
    if value is None and optional:
        return None
    kind = bool if "bool" in text else int if "int" in text else float if "float" in text else str
    try:
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError
            converted: Any = value
        elif isinstance(value, bool):
            raise ValueError
        elif kind is int:
            number = float(value)
            if number != int(number):
                raise ValueError
            converted = int(number)
        elif kind is float:
            converted = float(value)
        elif not isinstance(value, str):
            raise ValueError
        else:
            converted = value
    except (TypeError, ValueError, OverflowError):
        want = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
        raise ZooError(
            f"training setting train.{name} must be {want}{' or null' if optional else ''}, got {value!r} "
            f"(default {default!r})"
        ) from None
    if name == "device":
        _check_device(converted, default)
    elif name in _LIMITS:
        ok, allowed = _LIMITS[name]
        if not ok(converted):
            raise ZooError(f"training setting train.{name} must be {allowed}, got {value!r} (default {default!r})")
    return converted


def _finite(v: float) -> bool:
    return math.isfinite(v)


#: the longest run a setting may ask for: a billion optimiser steps (months at 100 steps a second). Beyond
#: it a number is a typo (``train.steps=1e99`` would otherwise be taken and run forever)
MAX_STEPS = 10**9
MAX_EPOCHS = 10**6
_STEPS = f"{MAX_STEPS:,}"


def _count(low: int, high: int) -> Any:
    return lambda v: low <= v <= high


#: the values each training setting may take (after type conversion; ``None`` is checked by the type):
#: ``name → (test, the allowed values in words)``. ``device`` is checked by :func:`_check_device`.
_LIMITS: dict[str, tuple[Any, str]] = {
    "steps": (_count(1, MAX_STEPS), f"an integer ≥ 1 and ≤ {_STEPS} (the total optimiser steps), or null to give "
              f"train.epochs"),
    "epochs": (_count(1, MAX_EPOCHS), f"an integer ≥ 1 and ≤ {MAX_EPOCHS:,}, or null to give train.steps"),
    "batch_size": (lambda v: v >= 1, "an integer ≥ 1"),
    "lr": (lambda v: _finite(v) and v > 0, "a number > 0 (e.g. 5e-4)"),
    "weight_decay": (lambda v: _finite(v) and v >= 0, "a number ≥ 0"),
    "warmup_steps": (_count(0, MAX_STEPS), f"an integer ≥ 0 (0: no warm-up) and ≤ {_STEPS}"),
    "label_smoothing": (lambda v: 0 <= v < 1, "a number from 0 (none) up to, not including, 1"),
    "grad_clip": (lambda v: _finite(v) and v >= 0, "a number ≥ 0 (0: no clipping)"),
    "max_caption_len": (lambda v: v >= 1, "an integer ≥ 1 (tokens)"),
    "num_workers": (lambda v: v >= 0, "an integer ≥ 0 (0: load in the main process)"),
    "eval_every": (lambda v: v is None or 1 <= v <= MAX_STEPS, f"an integer ≥ 1 and ≤ {_STEPS} (steps), or null "
                   f"for once per epoch"),
    "checkpoint_every": (lambda v: v is None or 1 <= v <= MAX_STEPS, f"an integer ≥ 1 and ≤ {_STEPS} (steps), or "
                         f"null for every validation"),
    "val_images": (lambda v: v >= 1, "an integer ≥ 1"),
    "val_beam_size": (lambda v: v >= 1, "an integer ≥ 1 (1: greedy)"),
    "log_every": (_count(1, MAX_STEPS), f"an integer ≥ 1 and ≤ {_STEPS} (steps)"),
    "scst_after": (lambda v: v is None or 1 <= v <= MAX_STEPS, f"an integer ≥ 1 and ≤ {_STEPS} (steps of xe before "
                   f"train.objective), or null"),
    "cache_dtype": (lambda v: v in CACHE_DTYPES, " or ".join(CACHE_DTYPES) + " (float16: half the disk)"),
}


def _check_device(name: str, default: Any) -> None:
    """``train.device`` names a device that exists here (``auto`` always does)."""
    if name == "auto":
        return
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ZooError(
            f"training setting train.device must be auto, cpu, cuda, cuda:N or mps, got {name!r} (default "
            f"{default!r}: a GPU when there is one, else the CPU)"
        ) from None
    module = getattr(torch.backends, "mps", None) if dev.type == "mps" else getattr(torch, dev.type, None)
    available = getattr(module, "is_available", None)
    if dev.type != "cpu" and available is not None and not available():
        what = "CUDA is" if dev.type == "cuda" else f"device type {dev.type!r} is"
        raise ZooError(
            f"training setting train.device={name}: {what} not available here (torch finds no usable "
            f"{'NVIDIA GPU and driver' if dev.type == 'cuda' else 'device of that type'}). Use "
            f"--set train.device=cpu, or train.device=auto (the default: a GPU only when there is one)."
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ZooError(
            f"training setting train.device={name}: there are {torch.cuda.device_count()} CUDA device(s) "
            f"here (cuda:0 to cuda:{torch.cuda.device_count() - 1}); use one of them, cuda, or auto (the default)."
        )


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    best_val_cider: float | None
    final_loss: float | None
    train_images_per_s: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    model: Any = None  # the trained model object (every rank's own, under torchrun)
    note: str | None = None  # said to the user: e.g. a resumed run that was already complete (nothing done)
