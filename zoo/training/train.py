"""Training: the loop, for any encoder + decoder + tokenizer and any training objective.

What a step minimises is a registered objective (``zoo.training.objective``: ``xe`` cross-entropy by default,
``scst`` self-critical); this module draws the batches, steps the optimiser, validates, checkpoints and
resumes.

One run lives in one folder::

    run.json           what was asked for (parts, data, training settings): enough to resume
    log.jsonl          one JSON object per logged step and per validation (``elapsed``: seconds of training)
    curves.png         loss, learning rate, validation CIDEr-D against steps and wall time (``zoo.views.curves``)
    state.safetensors  the latest training state (model, optimiser, schedule, RNG, data position)
    best.safetensors   the best model so far by validation CIDEr-D (a plain ``zoo.load`` checkpoint)
    last.safetensors   the final model

Every file is written atomically (temp + rename), so a run killed at any moment resumes with
``--resume`` from its last state, and, because the data order is a pure function of (seed, epoch) and
the RNG states are saved, ends with the same weights as a run that was never interrupted. The state is
written before validating (a state saved ahead of its validation says so, and a resume validates first);
any exception inside the loop saves the state of the last completed step and is reported with the
``zoo train --resume`` command (``zoo.training.run_guard``).

An epoch is one pass over every (image, caption) pair. With a frozen encoder (and no augmentation) the
features come from the on-disk feature cache (``zoo.data.feature_cache``), so the decoder trains without the
backbone in the loop. Several processes (``torchrun``) train with DistributedDataParallel: each rank takes
a strided share of every global batch; validation and checkpoints happen on rank 0.
"""

from __future__ import annotations

import base64
import json
import math
import random
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from zoo.runtime import distributed as dist
from zoo.models.checkpoint import save
from zoo.files import atomic_write
from zoo.errors import CheckpointError, ZooError
from zoo.evaluation.captioning import generate_for_items, simple_tokenize
from zoo.data.feature_cache import DTYPES as CACHE_DTYPES
from zoo.models.caption_model import CaptionModel
from zoo.runtime.device import resolve_device
from zoo.training.run_guard import RunGuard


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
    warmup_steps: int = 100  # linear warm-up; at most a tenth of the run's total steps is used (see lr_at)
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
            import difflib

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


#: the values each training setting may take (after type conversion; ``None`` is checked by the type):
#: ``name → (test, the allowed values in words)``. ``device`` is checked by :func:`_check_device`.
_LIMITS: dict[str, tuple[Any, str]] = {
    "steps": (lambda v: v >= 1, "an integer ≥ 1 (the total optimiser steps), or null to give train.epochs"),
    "epochs": (lambda v: v >= 1, "an integer ≥ 1, or null to give train.steps"),
    "batch_size": (lambda v: v >= 1, "an integer ≥ 1"),
    "lr": (lambda v: _finite(v) and v > 0, "a number > 0 (e.g. 5e-4)"),
    "weight_decay": (lambda v: _finite(v) and v >= 0, "a number ≥ 0"),
    "warmup_steps": (lambda v: v >= 0, "an integer ≥ 0 (0: no warm-up)"),
    "label_smoothing": (lambda v: 0 <= v < 1, "a number from 0 (none) up to, not including, 1"),
    "grad_clip": (lambda v: _finite(v) and v >= 0, "a number ≥ 0 (0: no clipping)"),
    "max_caption_len": (lambda v: v >= 1, "an integer ≥ 1 (tokens)"),
    "num_workers": (lambda v: v >= 0, "an integer ≥ 0 (0: load in the main process)"),
    "eval_every": (lambda v: v is None or v >= 1, "an integer ≥ 1 (steps), or null for once per epoch"),
    "checkpoint_every": (lambda v: v is None or v >= 1, "an integer ≥ 1 (steps), or null for every validation"),
    "val_images": (lambda v: v >= 1, "an integer ≥ 1"),
    "val_beam_size": (lambda v: v >= 1, "an integer ≥ 1 (1: greedy)"),
    "log_every": (lambda v: v >= 1, "an integer ≥ 1 (steps)"),
    "scst_after": (lambda v: v is None or v >= 1, "an integer ≥ 1 (steps of xe before train.objective), or null"),
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class PairIndex:
    """All (image, caption) pairs of a data set, tokenised once."""

    def __init__(self, dataset: Any, tokenizer: Any, max_len: int) -> None:
        image_of, texts = [], []
        for i, item in enumerate(dataset):
            for c in item.captions:
                image_of.append(i)
                texts.append(c)
        if not texts:
            raise ZooError(f"data set {dataset.name!r} split {dataset.split!r} has no captions to train on")
        self.image_of = torch.tensor(image_of, dtype=torch.long)
        self.tokens = tokenizer.batch_encode(texts, max_len=max_len)

    def __len__(self) -> int:
        return len(self.image_of)

    def order(self, seed: int, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        return torch.randperm(len(self), generator=g)


def effective_warmup(cfg: TrainConfig, total: int) -> int:
    """The warm-up a run of ``total`` steps uses: ``cfg.warmup_steps``, but at most a tenth of the run
    (``total // 10``), so a short trial run still reaches its learning rate. With the default 100 steps a
    run of 1,000 steps or more is not affected."""
    return min(cfg.warmup_steps, total // 10)


def lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    """Linear warm-up over :func:`effective_warmup` (``cfg.warmup_steps``, at most a tenth of ``total``), then
    cosine decay to zero at ``total``."""
    warm = effective_warmup(cfg, total)
    if warm and step < warm:
        return cfg.lr * (step + 1) / warm
    span = max(total - warm, 1)
    progress = min(max(step - warm, 0) / span, 1.0)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def total_steps(cfg: TrainConfig, num_pairs: int) -> tuple[int, int]:
    """``(total steps, steps per epoch)`` of a run over ``num_pairs`` (image, caption) pairs."""
    steps_per_epoch = max(num_pairs // cfg.batch_size, 1)
    if cfg.steps is None and cfg.epochs is None:
        raise ZooError("say how long to train: --set train.steps=N or --set train.epochs=N")
    total = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch  # type: ignore[operator]
    return total, steps_per_epoch


# -- training state ---------------------------------------------------------------------------------------
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
    """``extra_tensors``: more resumable state (the objectives' ``objective/...`` tensors)."""
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
    from safetensors import SafetensorError, safe_open

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
    from safetensors import SafetensorError

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


def _trim_log(path: Path, last_step: int | None, val_pending: bool = False) -> None:
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


# -- the loop ---------------------------------------------------------------------------------------------
def _image_batches(
    dataset: Any, transform: Any, pairs: PairIndex, batches: list[torch.Tensor], num_workers: int, pin: bool
) -> Iterator[torch.Tensor]:
    """The images of each batch's pairs, decoded in DataLoader workers (encoder in the loop)."""
    from zoo.data.datasets import ImageDataset

    loader = torch.utils.data.DataLoader(
        ImageDataset(dataset, transform),
        batch_sampler=[pairs.image_of[b].tolist() for b in batches],  # one worker task per batch
        num_workers=num_workers,
        generator=torch.Generator(),  # leave the global RNG stream alone
        pin_memory=pin,
    )
    for _, images in loader:
        yield images


def train(
    model: CaptionModel,
    train_set: Any,
    val_set: Any | None,
    out_dir: str | Path,
    cfg: TrainConfig,
    run_info: dict[str, Any] | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    objective_options: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` in place and write the run folder. ``stop_after`` ends the process-local loop
    after that many steps without finishing (tests use it to simulate a crash). ``objective_options``
    are the options of ``cfg.objective`` (``--set objective.KEY=VALUE``).

    Any exception inside the loop becomes a :class:`zoo.training.run_guard.RunFailed` naming the run folder and
    the ``zoo train --resume`` command, after the state of the last completed step is saved."""
    guard = RunGuard(Path(out_dir))
    try:
        return _train(model, train_set, val_set, out_dir, cfg, run_info, resume, stop_after, guard, objective_options)
    except BaseException as exc:
        failure = guard.failure(exc)
        if failure is None:
            raise
        raise failure from exc


def _train(
    model: CaptionModel,
    train_set: Any,
    val_set: Any | None,
    out_dir: str | Path,
    cfg: TrainConfig,
    run_info: dict[str, Any] | None,
    resume: bool,
    stop_after: int | None,
    guard: RunGuard,
    objective_options: dict[str, Any] | None = None,
) -> TrainResult:
    from tqdm.auto import tqdm

    from zoo.training.objective import ObjectiveBatch, ObjectiveContext, ObjectiveSchedule

    out = Path(out_dir)
    is_main = dist.rank() == 0
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    schedule = ObjectiveSchedule(cfg, objective_options)  # a bad name or option fails before any work
    seed_everything(cfg.seed)
    pairs = PairIndex(train_set, model.tokenizer, cfg.max_caption_len)
    world = dist.world_size()
    if cfg.batch_size % world:
        raise ZooError(f"train.batch_size={cfg.batch_size} must be divisible by the number of processes ({world})")
    total, steps_per_epoch = total_steps(cfg, len(pairs))
    eval_every = cfg.eval_every or steps_per_epoch
    ckpt_every = cfg.checkpoint_every or eval_every

    model.to(device)  # before the cache build, which runs the encoder on ``device``
    use_cache = cfg.cache_features and model.encoder.frozen
    cache = None
    if use_cache:
        from zoo.data.feature_cache import get_or_build

        builder = dist.local_rank() == 0  # one build per machine (caches are usually machine-local)
        if not builder:
            dist.barrier()  # wait for the builders, then read their cache
        cache = get_or_build(model.encoder, train_set, dtype=cfg.cache_dtype, num_workers=cfg.num_workers,
                             device=device, progress=cfg.progress and is_main)
        if builder:
            dist.barrier()
    seed_everything(cfg.seed)  # the same RNG stream whether or not the cache had to be built
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    progress_state = {"step": 0, "epoch": 0, "pos": 0, "best": None, "elapsed": 0.0, "images": 0}
    state_path = out / "state.safetensors"
    if resume:
        if not state_path.exists():
            raise ZooError(f"cannot resume: {state_path} does not exist (the run never saved a state)")
        objective_state: dict[str, torch.Tensor] = {}
        progress_state = load_state(state_path, model, opt, objective_state)
    # one id per run, kept across resumes (it lives in the saved state): every model file of the run carries
    # it, so the leaderboard can tell two files of one run from two runs wherever the files are copied
    run_info = {**(run_info or {}), "id": progress_state.setdefault("run_id", uuid.uuid4().hex)}
    schedule.setup(ObjectiveContext(train_set, model.tokenizer, pairs.tokens, pairs.image_of, cfg, device,
                                    dist.rank(), world))
    if resume:
        schedule.load_state_tensors(objective_state)
    net: torch.nn.Module = model
    if dist.is_distributed():
        net = dist.wrap_ddp(model, device, find_unused_parameters=not model.encoder.frozen)
    step_fn = net
    if cfg.compile:
        step_fn = torch.compile(net)  # type: ignore[assignment]
    use_amp = cfg.amp and device.type == "cuda"
    transform = model.encoder.transform(train=False)
    log_path = out / "log.jsonl"
    if is_main:  # a validation the state still owes is run (and logged) again below
        _trim_log(log_path, progress_state["step"] if resume else None, progress_state.get("val_pending", False))
    history: list[dict[str, Any]] = []
    from zoo.training.monitor import RunMonitor

    monitor = RunMonitor(out, active=is_main)  # elapsed, curves.png at each validation, TensorBoard

    def log(entry: dict[str, Any]) -> None:
        history.append(monitor(entry))
        if is_main:
            with open(log_path, "a") as fh:
                fh.write(json.dumps(entry) + "\n")

    step = progress_state["step"]
    best = progress_state["best"]
    last_loss = None

    def end_of_interval(step: int, epoch: int) -> None:
        """Validation (best.safetensors) at an ``eval_every`` step; runs after that step's state is saved,
        so a failure here loses no trained step (the saved state says it still owes this validation)."""
        nonlocal best
        if val_set is not None and is_main:
            score = validate(model, val_set, cfg, device)
            log({"step": step, "epoch": epoch, "val_cider_d": score})
            if best is None or score > best:
                best = score
                progress_state["best"] = best
                save(model, out / "best.safetensors", extra={"step": step, "val_cider_d": score, "run": run_info or {},
                                                             "objective": schedule.at(max(step - 1, 0)).describe()})
        elif val_set is None and is_main:
            save(model, out / "best.safetensors", extra={"step": step, "run": run_info or {},
                                                         "objective": schedule.at(max(step - 1, 0)).describe()})
        progress_state["val_pending"] = False

    def save_training_state() -> None:
        if is_main:
            save_state(state_path, model, opt, progress_state, schedule.state_tensors())

    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not (cfg.progress and is_main))
    guard.start(step, total, save_training_state, step if resume else None, close=[bar.close])
    if progress_state.get("val_pending"):  # the state was saved, its validation did not finish
        end_of_interval(step, progress_state["epoch"])
    t_start = time.perf_counter()
    images_done = 0
    done_here = 0
    while step < total:
        epoch, pos = progress_state["epoch"], progress_state["pos"]
        order = pairs.order(cfg.seed, epoch)
        starts = list(range(pos, steps_per_epoch * cfg.batch_size, cfg.batch_size))
        batches = [order[s : s + cfg.batch_size] for s in starts]
        batches = [b[dist.rank() :: world] for b in batches]  # this rank's share of each global batch
        image_iter = None if use_cache else _image_batches(train_set, transform, pairs, batches, cfg.num_workers, device.type == "cuda")
        for b in batches:
            if step >= total:
                break
            model.train()
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg, total)
            caps = pairs.tokens[b]
            width = int((caps != model.tokenizer.pad_id).sum(1).max())
            caps = caps[:, :width].to(device)
            if cache is not None:
                inputs: Any = cache.batch(pairs.image_of[b], device)
            else:
                inputs = next(image_iter).to(device, non_blocking=True)  # type: ignore[arg-type]
            objective = schedule.at(step)
            guard.step_begins()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                result = objective.step(model, step_fn, ObjectiveBatch(inputs, caps, pairs.image_of[b], step))
            loss = result.loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            opt.step()
            step += 1
            done_here += 1
            images_done += len(b) * world
            progress_state["pos"] += cfg.batch_size
            progress_state["step"] = step
            eval_due = step % eval_every == 0 or step == total
            progress_state["val_pending"] = eval_due
            guard.step_done(step)
            last_loss = float(loss.detach())
            bar.update(1)
            elapsed = time.perf_counter() - t_start
            speed = images_done / elapsed if elapsed > 0 else 0.0
            bar.set_postfix(loss=f"{last_loss:.3f}", img_s=f"{speed:.0f}")
            if step % cfg.log_every == 0 or step == total:
                log({"step": step, "epoch": epoch, "loss": last_loss, "lr": opt.param_groups[0]["lr"], "images_per_s": speed, **result.logs})
            if step % ckpt_every == 0 or step == total:  # the state first: validation may fail
                guard.save()
                dist.barrier()
            if eval_due:
                end_of_interval(step, epoch)
            if stop_after is not None and done_here >= stop_after:
                bar.close()
                return TrainResult(out, step, best, last_loss, None, history, model)
        else:
            progress_state["epoch"] += 1
            progress_state["pos"] = 0
    bar.close()
    dist.broadcast_buffers(model)  # every rank ends with rank 0's model, running statistics included
    elapsed = time.perf_counter() - t_start
    speed = images_done / elapsed if elapsed > 0 and images_done else None
    if is_main:
        save(model, out / "last.safetensors", extra={"step": step, "run": run_info or {}, "train_images_per_s": speed,
                                                      "objective": schedule.at(max(step - 1, 0)).describe()})
        summary = {"steps": step, "best_val_cider_d": best, "final_loss": last_loss, "train_images_per_s": speed}
        atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
    dist.barrier()  # no rank returns before rank 0 has written the run's final files
    return TrainResult(out, step, best, last_loss, speed, history, model)


@torch.no_grad()
def validate(model: CaptionModel, val_set: Any, cfg: TrainConfig, device: torch.device) -> float:
    """Greedy (``val_beam_size``) CIDEr-D on up to ``val_images`` validation images, with our vectorised
    CIDEr-D and a simple tokenisation (the official PTB protocol is for ``zoo eval``)."""
    from zoo.evaluation.cider import CiderD

    n = min(len(val_set), cfg.val_images)
    subset = [val_set[i] for i in range(n)]
    caps = generate_for_items(model, val_set, list(range(n)), cfg.val_beam_size, cfg.max_caption_len + 4, device,
                              batch_size=max(cfg.batch_size, 32), num_workers=cfg.num_workers)
    gts = {i: [simple_tokenize(c) for c in it.captions] for i, it in enumerate(subset)}
    res = {i: [simple_tokenize(caps[i])] for i in range(n)}
    if n < 2:
        return 0.0
    score, _ = CiderD().compute_score(gts, res)
    return float(score)


def read_train_speed(run_dir: str | Path | None) -> float | None:
    """Training images/s that a finished run recorded in its ``summary.json`` (None if absent)."""
    if run_dir is None or not (Path(run_dir) / "summary.json").exists():
        return None
    return json.loads((Path(run_dir) / "summary.json").read_text()).get("train_images_per_s")
