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

import json
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from zoo.data.feature_cache import get_or_build
from zoo.errors import ZooError
from zoo.evaluation.captioning import generate_for_items, simple_tokenize
from zoo.evaluation.cider import CiderD
from zoo.files import atomic_write
from zoo.models.caption_model import CaptionModel
from zoo.models.checkpoint import save
from zoo.runtime import distributed as dist
from zoo.runtime.device import resolve_device
from zoo.training.config import TrainConfig, TrainResult
from zoo.training.monitor import RunMonitor
from zoo.training.objective import ObjectiveBatch, ObjectiveContext, ObjectiveSchedule
from zoo.training.pairs import PairIndex, image_batches
from zoo.training.run_guard import RunGuard
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
        trim_log(log_path, progress_state["step"] if resume else None, progress_state.get("val_pending", False))
    history: list[dict[str, Any]] = []
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
        image_iter = None if use_cache else image_batches(train_set, transform, pairs, batches, cfg.num_workers, device.type == "cuda")
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
