"""The training state, ``state.safetensors``: the model's weights, the optimiser's state, every RNG (Python,
numpy, torch, CUDA), the objective's resumable tensors and the progress record (step, epoch, position in
the epoch, best validation score, run id, whether the step's validation is still owed), written atomically
and read back exactly, so a resumed run ends with the weights of a run never interrupted. Also what goes
with it: the seeding of those RNGs, and ``log.jsonl`` trimmed back to the state a run resumes from."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from zoo.errors import CheckpointError
from zoo.files import atomic_write
from zoo.models.caption_model import CaptionModel


def seed_everything(seed: int) -> None:
    """Seed the global RNGs a training state saves: Python's, numpy's and torch's (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _state_tensors(model: CaptionModel, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    for k, v in model.state_dict(keep_vars=False).items():
        tensors[f"model/{k}"] = v.detach().cpu().clone().contiguous()
        seen[id(v)] = k
    osd = opt.state_dict()
    meta_state: dict[str, dict[str, Any]] = {}
    for pid, st in osd["state"].items():
        meta_state[str(pid)] = {}
        for name, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim/{pid}/{name}"] = val.detach().cpu().clone().contiguous()
            else:
                meta_state[str(pid)][name] = val
    rng = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.frombuffer(json.dumps(_np_state()).encode(), dtype=np.uint8).copy()),
    }
    if torch.cuda.is_available():  # dropout on a GPU draws from the CUDA generators
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda/{i}"] = st
    for k, v in rng.items():
        tensors[f"rng/{k}"] = v
    return tensors, {"param_groups": osd["param_groups"], "scalar_state": meta_state}


def _np_state() -> list:
    s = np.random.get_state()
    return [s[0], s[1].tolist(), int(s[2]), int(s[3]), float(s[4])]


def save_state(path: Path, model: CaptionModel, opt: torch.optim.Optimizer, progress: dict[str, Any],
               extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """``extra_tensors``: more resumable state (the objectives' ``objective/...`` tensors). Weights that are
    not finite are refused (a CheckpointError naming them): a state to resume from must never hold NaN."""
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f"not saving the training state to {path}: {len(bad)} weight tensor(s) hold NaN or infinite values "
            f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); the state on disk is kept as it was"
        )
    tensors, optim_meta = _state_tensors(model, opt)
    tensors.update(extra_tensors or {})
    meta = {
        "progress": json.dumps(progress),
        "optim": json.dumps(optim_meta),
        "python_rng": json.dumps(_py_state()),
        "config": json.dumps(model.config),
        "tokenizer": base64.b64encode(model.tokenizer.to_bytes()).decode("ascii"),
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _py_state() -> list:
    v, internal, gauss = random.getstate()
    return [v, list(internal), gauss]


STATE_METADATA = ("progress", "optim", "python_rng", "config", "tokenizer")


def _damaged_state(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"cannot resume from {path}: the file is damaged ({why}). It is written atomically (a temporary file, "
        f"then a rename), so a crash while saving cannot leave it like this: it was damaged on disk or in a "
        f"copy. Resume from an earlier copy of the run folder (a backup), or start the run again with "
        f"another --out. best.safetensors and last.safetensors are separate, complete model files: "
        f"`zoo eval` and `zoo caption` still use them."
    )


def read_state_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a training state (``state.safetensors``), checked: a truncated, empty or foreign
    file is a :class:`CheckpointError` naming it and saying what to do."""
    path = Path(path)
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise _damaged_state(path, f"{type(exc).__name__}: {exc}; {_size(path)}") from exc
    missing = [k for k in STATE_METADATA if k not in meta]
    if missing:
        raise _damaged_state(path, f"it is a safetensors file but not a training state: no {', '.join(missing)} in its metadata")
    try:
        progress = json.loads(meta["progress"])
        if not isinstance(progress.get("step"), int):
            raise ValueError("no step")
    except (ValueError, AttributeError) as exc:
        raise _damaged_state(path, f"its progress record cannot be read: {exc}") from exc
    return meta


def _size(path: Path) -> str:
    try:
        return f"{path.stat().st_size} bytes"
    except OSError:
        return "size unknown"


def saved_step(path: str | Path) -> int:
    """The step a training state was saved at (the file checked as :func:`read_state_metadata` does)."""
    return int(json.loads(read_state_metadata(path)["progress"])["step"])


def load_state(path: Path, model: CaptionModel, opt: torch.optim.Optimizer,
               extra_tensors: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Restore a state into ``model`` and ``opt`` (and the RNGs); returns its progress record. The
    ``objective/...`` tensors go into ``extra_tensors`` when given."""
    meta = read_state_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _damaged_state(path, f"{type(exc).__name__}: {exc}") from exc
    missing = [k for k in ("rng/torch", "rng/numpy") if k not in tensors]
    if missing or not any(k.startswith("model/") for k in tensors):
        raise _damaged_state(path, f"it lacks {', '.join(missing) or 'the model weights'}")
    model_sd = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    model.load_state_dict(model_sd)
    optim_meta = json.loads(meta["optim"])
    state: dict[int, dict[str, Any]] = {}
    for pid, scalars in optim_meta["scalar_state"].items():
        state[int(pid)] = dict(scalars)
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, pid, name = k.split("/", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": optim_meta["param_groups"]})
    torch.set_rng_state(tensors["rng/torch"])
    cuda_states = [tensors[f"rng/cuda/{i}"] for i in range(torch.cuda.device_count()) if f"rng/cuda/{i}" in tensors]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    s = json.loads(bytes(tensors["rng/numpy"].numpy()).decode())
    np.random.set_state((s[0], np.array(s[1], dtype=np.uint32), s[2], s[3], s[4]))
    v, internal, gauss = json.loads(meta["python_rng"])
    random.setstate((v, tuple(internal), gauss))
    if extra_tensors is not None:
        extra_tensors.update({k: t for k, t in tensors.items() if k.startswith("objective/")})
    return json.loads(meta["progress"])


def trim_log(path: Path, last_step: int | None, val_pending: bool = False) -> None:
    """A fresh run starts a new ``log.jsonl``. A resumed run keeps the entries up to the step of the
    state it resumes from (the steps after it are run, and logged, again) and drops a line cut short by
    a crash. With ``val_pending`` (the state was saved before its step's validation finished) that
    step's validation entries go too: the validation is run again."""
    if not path.exists():
        return
    if last_step is None:
        path.unlink()
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or entry.get("step", 0) > last_step:
            continue
        if val_pending and entry.get("step") == last_step and any(k.startswith("val") for k in entry):
            continue
        kept.append(line + "\n")
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(kept)))
