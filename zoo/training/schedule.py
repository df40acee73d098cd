"""How long a run is and how fast it learns at each step: total steps from ``train.steps`` or
``train.epochs``, a linear warm-up, then cosine decay to zero."""

from __future__ import annotations

import math

from zoo.errors import ZooError
from zoo.training.config import MAX_STEPS, TrainConfig


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
    if total > MAX_STEPS:  # epochs within their bound can still make a run no one means to wait for
        raise ZooError(
            f"train.epochs={cfg.epochs} over {num_pairs:,} (image, caption) pairs in batches of {cfg.batch_size} "
            f"is {total:,} optimiser steps, more than the {MAX_STEPS:,} a run may take; ask for fewer epochs, "
            f"or give train.steps"
        )
    return total, steps_per_epoch
