"""What makes two scores comparable and a score reproducible: the hash of a model's full config (which rows
are one system), the hash of a reference set (which rows may be ranked together), the training run a
checkpoint came from, and the environment an evaluation ran in (versions, device, git commit).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from zoo.errors import UnknownNameError, ZooError
from zoo.models.checkpoint import read_extra
from zoo.registry.manager import get_registry
from zoo.version import __version__

_PARTS = ("encoder", "decoder", "tokenizer")
# labels that name how a model was asked for, not what it is (a recipe's options are in its parts already)
_NOT_HASHED = ("recipe",)


def full_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` (a ``CaptionModel.config``) with every part's options completed by its factory's
    defaults, as ``zoo info`` shows them (the registry's ``Entry.user_options()``), so a model built with
    ``dropout=0.3`` spelled out and one that left the default have the same full config. Options given
    win over defaults; a part whose name is not registered here keeps the options it has. A mapping
    without parts (``{"encoder": {"name": ..., "kwargs": ...}, ...}``) is returned as it is."""
    out = dict(config)
    parts = [p for p in _PARTS if isinstance(out.get(p), Mapping) and isinstance(out[p].get("name"), str)]
    if not parts:
        return out
    registry = get_registry()
    for part in parts:
        spec = dict(out[part])
        try:
            defaults, _required = registry.get(part, spec["name"]).user_options()
        except UnknownNameError:
            defaults = {}
        spec["kwargs"] = {**defaults, **dict(spec.get("kwargs") or {})}
        out[part] = spec
    return out


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 of the full model config as canonical JSON: two rows with the same hash are the same system
    (up to seed). The config is completed first (:func:`full_config`: every option the factory defaults,
    filled in), so equal models hash equal however their options were spelled, and the ``recipe`` label
    is left out (a recipe's options are in the parts). Non-JSON values are hashed through ``str`` so the
    hash never fails on an odd option.

    Rows recorded before defaults were filled in keep the hash they were stored with; re-record them
    (``zoo eval`` again) to pool them with newer rows of the same model."""
    full = full_config(config)
    if any(p in full for p in _PARTS):
        full = {k: v for k, v in full.items() if k not in _NOT_HASHED}
    text = json.dumps(full, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_identity(checkpoint: str | Path) -> dict[str, str]:
    """What a checkpoint says about the training run that wrote it, for a row's ``extra``: ``run_id`` (one
    per ``zoo train`` run, the same in its best and last files) and ``train_hash`` (its training settings
    without the seed). Empty for a file written otherwise or before these were recorded; the leaderboard
    then falls back to seeds and file names, as before."""
    try:
        run = read_extra(checkpoint).get("run")
    except (AttributeError, ValueError, ZooError):
        return {}
    if not isinstance(run, dict):
        return {}
    found = {"run_id": run.get("id"), "train_hash": run.get("train_hash")}
    return {k: v for k, v in found.items() if isinstance(v, str) and v}


def references_hash(refs: Mapping[Any, Iterable[str]]) -> str:
    """sha256 of a reference set: image ids and their captions, order-independent.

    CIDEr-D's document frequencies come from the references being scored, so scores are only comparable
    on the very same reference set; a changed caption or a missing image changes this hash."""
    canon = sorted((str(image_id), sorted(str(c) for c in caps)) for image_id, caps in refs.items())
    text = json.dumps(canon, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe_device(device: str | None = None) -> str:
    """A human description of where a run happened, e.g. ``cuda:0 (NVIDIA H200)`` or ``cpu (… , 16 cores)``."""
    if device is None or str(device).startswith("cuda"):
        try:
            if torch.cuda.is_available() and (device is None or str(device).startswith("cuda")):
                dev = torch.device(device or "cuda")
                index = dev.index if dev.index is not None else torch.cuda.current_device()
                return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
        except Exception:  # noqa: BLE001 - a description must never fail an evaluation
            pass
        if device is None:
            device = "cpu"
    if str(device) == "cpu":
        return f"cpu ({_cpu_name()}, {os.cpu_count()} cores)"
    return str(device)


def _git(args: list[str], cwd: str | Path | None) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment_info(device: str | None = None, cwd: str | Path | None = None) -> dict[str, Any]:
    """Versions (zoo, torch, timm, python, numpy), the device and the git commit of ``cwd`` (None outside
    a repository or without git); ``git_dirty`` says whether tracked files had uncommitted changes, since
    a commit alone then does not reproduce the number."""
    commit = _git(["rev-parse", "HEAD"], cwd)
    dirty = None
    if commit:
        status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
        dirty = bool(status) if status is not None else None
    return {
        "versions": {
            "zoo": __version__,
            "torch": _dist_version("torch"),
            "timm": _dist_version("timm"),
            "numpy": _dist_version("numpy"),
            "python": platform.python_version(),
        },
        "device": describe_device(device),
        "git_commit": commit,
        "git_dirty": dirty,
    }
