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
``zoo train --resume`` command (``zoo.training.run_guard``). A step whose loss or gradient is not finite
is never applied, nor an update that leaves a weight non-finite: the run stops there (``NonFiniteLoss``),
so no state or model file holds NaN weights.

An epoch is one pass over every (image, caption) pair. With a frozen encoder (and no augmentation) the
features come from the on-disk feature cache (``zoo.data.feature_cache``), so the decoder trains without the
backbone in the loop. Several processes (``torchrun``) train with DistributedDataParallel: each rank takes
a strided share of every global batch; validation and checkpoints happen on rank 0.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from tqdm.auto import tqdm

from zoo.contracts.executor import StopRequested, stop_requested
from zoo.data.feature_cache import get_or_build
from zoo.errors import ZooError
from zoo.evaluation.captioning import validation_score
from zoo.files import atomic_write
from zoo.models.caption_model import CaptionModel
from zoo.models.checkpoint import save
from zoo.runtime import distributed as dist
from zoo.runtime.device import resolve_device
from zoo.runtime.threads import adapt_threads
from zoo.training.config import TrainConfig, TrainResult
from zoo.training.monitor import RunMonitor
from zoo.training.objective import ObjectiveBatch, ObjectiveContext, ObjectiveSchedule, StepOutput
from zoo.training.pairs import PairIndex, image_batches
from zoo.training.run_guard import NonFiniteLoss, RunGuard
from zoo.training.schedule import lr_at, total_steps
from zoo.training.state import load_state, save_state, seed_everything, trim_log


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
    guard = RunGuard(Path(out_dir), writer=dist.rank() == 0)  # only rank 0 writes the training state
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
    """The run: set-up (:func:`_set_up`), the validation a resumed state still owes, then epochs of steps
    (:meth:`_Run.train_step`, :meth:`_Run.after_step`) until ``cfg``'s total, and the end (:meth:`_Run.finish`).
    ``guard`` is told where the loop starts and where each step begins and ends."""
    run = _set_up(model, train_set, val_set, Path(out_dir), cfg, run_info, resume, objective_options)
    bar = tqdm(total=run.total, initial=run.step, desc="train", unit="step", disable=not (cfg.progress and run.is_main))
    guard.start(run.step, run.total, run.save_training_state, run.step if resume else None, close=[bar.close])
    if run.progress.get("val_pending"):  # the state was saved, its validation did not finish
        run.validate_and_keep_best(run.step, run.progress["epoch"])
    speed = _Speed()
    done_here = 0
    while run.step < run.total:
        epoch = run.progress["epoch"]
        batches, images = run.epoch_batches()
        for b in batches:
            if run.step >= run.total:
                break
            adapt_threads()  # a zoo command's threads follow the CPUs left free (zoo.runtime.threads)
            result = run.train_step(b, images, guard)
            done_here += 1
            speed.images += len(b) * run.world
            bar.update(1)
            images_per_s = speed.now()
            bar.set_postfix(loss=f"{run.last_loss:.3f}", img_s=f"{images_per_s:.0f}")
            run.after_step(result, epoch, images_per_s, guard)
            reason = stop_requested()  # a job asked to stop (preempted, cancelled): the guard saves this step
            if reason is not None:
                raise StopRequested(reason)
            if stop_after is not None and done_here >= stop_after:
                bar.close()
                return TrainResult(run.out, run.step, run.progress["best"], run.last_loss, None, run.history, model)
        else:  # the epoch ran to its end
            run.progress["epoch"] += 1
            run.progress["pos"] = 0
    bar.close()
    return run.finish(speed)


@dataclass
class _Run:
    """One run from its set-up to its end: what its steps share. ``progress`` is the record saved in the
    training state (``step``, ``epoch``, ``pos``, ``best``, ``val_pending``, ``run_id``): the run's one
    account of how far it is."""

    model: CaptionModel
    train_set: Any
    val_set: Any | None
    cfg: TrainConfig
    out: Path
    is_main: bool  # rank 0: writes the files, validates
    world: int
    device: torch.device
    schedule: ObjectiveSchedule
    pairs: PairIndex
    total: int
    steps_per_epoch: int
    eval_every: int
    ckpt_every: int
    cache: Any  # the cached features of the training images; None: the encoder is in the loop
    trainable: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    step_fn: Any  # what a step calls for gradients: the model, or its DDP / torch.compile wrapper
    use_amp: bool
    transform: Any
    progress: dict[str, Any]
    run_info: dict[str, Any]
    monitor: RunMonitor
    history: list[dict[str, Any]] = field(default_factory=list)
    last_loss: float | None = None

    @property
    def step(self) -> int:
        """Steps taken so far (this run's and, after a resume, its earlier ones)."""
        return self.progress["step"]

    # -- one step ---------------------------------------------------------------------------------------
    def epoch_batches(self) -> tuple[list[torch.Tensor], Iterator[torch.Tensor] | None]:
        """The pairs of each batch left in the current epoch (from its saved position; this rank's share
        of each global batch) and, with the encoder in the loop, an iterator over their images."""
        cfg, world = self.cfg, self.world
        order = self.pairs.order(cfg.seed, self.progress["epoch"])
        starts = list(range(self.progress["pos"], self.steps_per_epoch * cfg.batch_size, cfg.batch_size))
        batches = [order[s : s + cfg.batch_size] for s in starts]
        batches = [b[dist.rank() :: world] for b in batches]  # this rank's share of each global batch
        images = None if self.cache is not None else image_batches(
            self.train_set, self.transform, self.pairs, batches, cfg.num_workers, self.device.type == "cuda")
        return batches, images

    def train_step(self, b: torch.Tensor, images: Iterator[torch.Tensor] | None, guard: RunGuard) -> StepOutput:
        """One optimiser step on the pairs ``b`` (their images next from ``images``, or their cached
        features), with the objective of this step; then ``progress`` counts it and ``guard`` knows it is
        done. A failure between ``guard.step_begins()`` and ``guard.step_done()`` is one mid-step."""
        model, cfg, device, step = self.model, self.cfg, self.device, self.step
        model.train()
        for g in self.opt.param_groups:
            g["lr"] = lr_at(step, cfg, self.total)
        caps = self.pairs.tokens[b]
        width = int((caps != model.tokenizer.pad_id).sum(1).max())
        caps = caps[:, :width].to(device)
        if self.cache is not None:
            inputs: Any = self.cache.batch(self.pairs.image_of[b], device)
        else:
            inputs = next(images).to(device, non_blocking=True)  # type: ignore[arg-type]
        objective = self.schedule.at(step)
        guard.step_begins()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            result = objective.step(model, self.step_fn, ObjectiveBatch(inputs, caps, self.pairs.image_of[b], step))
        loss = result.loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        # the gradient norm (clipped to grad_clip, or only measured): a NaN or infinite loss or gradient stops
        # the run before the optimiser applies it, so no saved state or model ever holds NaN weights
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, cfg.grad_clip or float("inf"))
        if dist.any_rank(not (torch.isfinite(loss.detach()) and torch.isfinite(norm))):
            raise NonFiniteLoss(_non_finite_message(step + 1, loss, norm, self.cache is not None, cfg))
        self.opt.step()
        if not _finite_weights(self.trainable):  # an update that overflowed (a huge lr or weight decay)
            raise NonFiniteLoss(
                f"the optimiser's update at step {step + 1} made weights NaN or infinite (its loss and gradient "
                f"were finite): training stops here, and these weights are never saved. Usual cause: a learning "
                f"rate or weight decay too high (train.lr={cfg.lr:g}, train.weight_decay={cfg.weight_decay:g})")
        step += 1
        self.progress["pos"] += cfg.batch_size
        self.progress["step"] = step
        self.progress["val_pending"] = step % self.eval_every == 0 or step == self.total  # its validation is due
        guard.step_done(step)
        self.last_loss = float(loss.detach())
        return result

    def after_step(self, result: StepOutput, epoch: int, images_per_s: float, guard: RunGuard) -> None:
        """What a step is followed by when due: its log entry, the training state (through ``guard``, before
        validating: validation may fail), its validation."""
        step = self.step
        if step % self.cfg.log_every == 0 or step == self.total:
            self.log({"step": step, "epoch": epoch, "loss": self.last_loss, "lr": self.opt.param_groups[0]["lr"],
                      "images_per_s": images_per_s, "threads": torch.get_num_threads(), **result.logs})
        if step % self.ckpt_every == 0 or step == self.total:  # the state first: validation may fail
            guard.save()
            dist.barrier()
        if self.progress["val_pending"]:
            self.validate_and_keep_best(step, epoch)

    # -- validation, files ------------------------------------------------------------------------------
    def validate_and_keep_best(self, step: int, epoch: int) -> None:
        """Validation (best.safetensors) at an ``eval_every`` step; runs after that step's state is saved,
        so a failure here loses no trained step (the saved state says it still owes this validation).
        Without a validation set, best.safetensors is the latest model."""
        if self.val_set is not None and self.is_main:
            score = validate(self.model, self.val_set, self.cfg, self.device)
            self.log({"step": step, "epoch": epoch, "val_cider_d": score})
            best = self.progress["best"]
            if best is None or score > best:
                self.progress["best"] = score
                save(self.model, self.out / "best.safetensors",
                     extra={"step": step, "val_cider_d": score, "run": self.run_info, "objective": self.objective_of(step)})
        elif self.val_set is None and self.is_main:
            save(self.model, self.out / "best.safetensors",
                 extra={"step": step, "run": self.run_info, "objective": self.objective_of(step)})
        self.progress["val_pending"] = False

    def objective_of(self, step: int) -> dict[str, Any]:
        """``extra["objective"]`` of a model file written after ``step`` steps: the objective of the last."""
        return self.schedule.at(max(step - 1, 0)).describe()

    def log(self, entry: dict[str, Any]) -> None:
        """One line of ``log.jsonl`` (rank 0), stamped and kept in ``history`` by the monitor (every rank)."""
        self.history.append(self.monitor(entry))
        if self.is_main:
            with open(self.out / "log.jsonl", "a") as fh:
                fh.write(json.dumps(entry) + "\n")

    def save_training_state(self) -> None:
        """``state.safetensors`` (rank 0): what the run's ``guard`` calls to save the current step."""
        if self.is_main:
            save_state(self.out / "state.safetensors", self.model, self.opt, self.progress,
                       self.schedule.state_tensors())

    def finish(self, speed: _Speed) -> TrainResult:
        """The end of the run: every rank holds rank 0's model (running statistics included); rank 0 writes
        ``last.safetensors`` and ``summary.json``; no rank returns before it has."""
        step, best = self.step, self.progress["best"]
        dist.broadcast_buffers(self.model)  # every rank ends with rank 0's model, running statistics included
        images_per_s = speed.final()
        if self.is_main:
            save(self.model, self.out / "last.safetensors", extra={
                "step": step, "run": self.run_info, "train_images_per_s": images_per_s, "objective": self.objective_of(step)})
            summary = {"steps": step, "best_val_cider_d": best, "final_loss": self.last_loss,
                       "train_images_per_s": images_per_s}
            atomic_write(self.out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
        dist.barrier()  # no rank returns before rank 0 has written the run's final files
        return TrainResult(self.out, step, best, self.last_loss, images_per_s, self.history, self.model)


def _finite_weights(params: list[torch.nn.Parameter]) -> bool:
    """Whether every weight is finite: the largest magnitude of each tensor (an inf-norm, which cannot
    overflow as a 2-norm of large weights would), one reduction and one sync per step. The same answer on
    every rank: DDP keeps their weights equal."""
    if not params:
        return True
    total = getattr(torch.nn.utils, "get_total_norm", None)  # torch ≥ 2.6: fused over the tensors
    with torch.no_grad():
        largest = total(params, norm_type=float("inf")) if total is not None else \
            torch.stack([p.detach().abs().max() for p in params]).max()
    return bool(torch.isfinite(largest))


def _non_finite_message(step: int, loss: torch.Tensor, norm: torch.Tensor, cached: bool, cfg: TrainConfig) -> str:
    """Why a step was not applied, and what usually causes it."""
    value = float(loss.detach())
    what = f"the loss of step {step} is {value}" if not math.isfinite(value) else (
        f"the gradient of step {step} is not finite (norm {float(norm)}; loss {value:.4g})")
    if dist.is_distributed() and math.isfinite(value) and math.isfinite(float(norm)):
        what = f"the loss or gradient of step {step} is not finite on another rank"
    source = ("damaged input features (a feature cache entry is checked when a run opens it, and rebuilt "
              "if damaged)" if cached else "images that decode to garbage")
    return (f"{what}: training stops before that step changes the weights (they are still those of step "
            f"{step - 1}). Usual causes: a learning rate too high (train.lr={cfg.lr:g}; try a tenth), "
            f"{source}, or a decoder plugin whose output overflows")


@dataclass
class _Speed:
    """Training images per second in this process, from the first step it trains (a resumed run's own)."""

    start: float = field(default_factory=time.perf_counter)
    images: int = 0  # images trained on, every rank's together

    def now(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.images / elapsed if elapsed > 0 else 0.0

    def final(self) -> float | None:
        """As recorded in ``last.safetensors`` and ``summary.json``: None when this process trained nothing."""
        elapsed = time.perf_counter() - self.start
        return self.images / elapsed if elapsed > 0 and self.images else None


# -- set-up -----------------------------------------------------------------------------------------------
def _set_up(
    model: CaptionModel,
    train_set: Any,
    val_set: Any | None,
    out: Path,
    cfg: TrainConfig,
    run_info: dict[str, Any] | None,
    resume: bool,
    objective_options: dict[str, Any] | None,
) -> _Run:
    """Everything before the first step, in this order, fresh run or resumed: the objectives (a bad name
    or option fails before any work), the pairs and the run's length, the feature cache, the optimiser,
    the saved state on ``resume``, the run id, the module a step calls, the log trimmed to the state, the
    monitor. The RNGs are seeded again after the cache, so they stand where they would had it been built
    already. A failure here comes before the loop starts: the guard passes it on unchanged."""
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
    cache = _feature_cache(model, train_set, cfg, device, is_main) if use_cache else None
    seed_everything(cfg.seed)  # the same RNG stream whether or not the cache had to be built
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    progress: dict[str, Any] = {"step": 0, "epoch": 0, "pos": 0, "best": None, "elapsed": 0.0, "images": 0}
    state_path = out / "state.safetensors"
    if resume:
        if not state_path.exists():
            raise ZooError(f"cannot resume: {state_path} does not exist (the run never saved a state)")
        objective_state: dict[str, torch.Tensor] = {}
        progress = load_state(state_path, model, opt, objective_state)
    # one id per run, kept across resumes (it lives in the saved state): every model file of the run carries
    # it, so the leaderboard can tell two files of one run from two runs wherever the files are copied
    run_info = {**(run_info or {}), "id": progress.setdefault("run_id", uuid.uuid4().hex)}
    schedule.setup(ObjectiveContext(train_set, model.tokenizer, pairs.tokens, pairs.image_of, cfg, device,
                                    dist.rank(), world))
    if resume:
        schedule.load_state_tensors(objective_state)
    step_fn = _step_module(model, device, cfg)
    use_amp = cfg.amp and device.type == "cuda"
    transform = model.encoder.transform(train=False)
    if is_main:  # a validation the state still owes is run (and logged) again
        trim_log(out / "log.jsonl", progress["step"] if resume else None, progress.get("val_pending", False))
    monitor = RunMonitor(out, active=is_main)  # elapsed, curves.png at each validation, TensorBoard
    return _Run(model, train_set, val_set, cfg, out, is_main, world, device, schedule, pairs, total, steps_per_epoch,
                eval_every, ckpt_every, cache, trainable, opt, step_fn, use_amp, transform, progress, run_info, monitor)


def _feature_cache(model: CaptionModel, train_set: Any, cfg: TrainConfig, device: torch.device, is_main: bool) -> Any:
    """The frozen encoder's features of every training image, from the on-disk cache (built on first use,
    once per machine: the other local ranks wait for it, then read it)."""
    builder = dist.local_rank() == 0  # one build per machine (caches are usually machine-local)
    if not builder:
        dist.barrier("waiting for local rank 0 to check or build the feature cache")  # then read it
    # the builder has just checked the entry's checksums (or written it): the others need not read it all again
    with model.blamed("encoder", "encoding the training images for the feature cache"):
        cache = get_or_build(model.encoder, train_set, dtype=cfg.cache_dtype, num_workers=cfg.num_workers,
                             device=device, progress=cfg.progress and is_main, verify=builder)
    if builder:
        dist.barrier("telling the other ranks the feature cache is ready")
    return cache


def _step_module(model: CaptionModel, device: torch.device, cfg: TrainConfig) -> Any:
    """What a step calls for its forward pass: ``model``, wrapped in DistributedDataParallel under
    ``torchrun`` and in ``torch.compile`` with ``train.compile``."""
    net: torch.nn.Module = model
    if dist.is_distributed():
        net = dist.wrap_ddp(model, device, find_unused_parameters=not model.encoder.frozen)
    step_fn = net
    if cfg.compile:
        step_fn = torch.compile(net)  # type: ignore[assignment]
    return step_fn


def validate(model: CaptionModel, val_set: Any, cfg: TrainConfig, device: torch.device) -> float:
    """The validation score of a run with settings ``cfg``: CIDEr-D of ``val_beam_size`` captions (greedy by
    default) of up to ``val_images`` validation images (:func:`zoo.evaluation.captioning.validation_score`)."""
    return validation_score(model, val_set, cfg.val_images, cfg.val_beam_size, cfg.max_caption_len + 4, device,
                            batch_size=max(cfg.batch_size, 32), num_workers=cfg.num_workers)
