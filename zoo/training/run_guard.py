"""What a training run saves when something inside its loop fails, and what it tells the user.

``zoo.training.loop.train`` hands its model, optimiser and progress to a :class:`RunGuard` once the loop starts,
and tells it where each step begins and ends. When anything inside the loop raises (validation, a full
disk, a log write, a data error, Ctrl-C), the guard writes the training state of the last completed step
(unless that is already on disk) and turns the exception into a :class:`RunFailed` that names the run
folder and the exact ``zoo train --resume RUN`` command. A failure in the middle of a step (its forward,
backward or optimiser update) cannot be saved exactly (dropout has drawn, batch-norm statistics moved),
so the guard points to the last state written instead and says which steps will be trained again.

Under ``torchrun`` only rank 0 writes the state; every other rank, when it fails, reports the state that is
on disk (read back from the file), never a step of its own as "saved". A rank whose peer stopped (gloo's
"Connection closed by peer") says that, not the raw error. A step whose loss is not finite is never applied
(:class:`NonFiniteLoss`): the loop stops there, so no state or model file ever holds NaN weights.

Why a guard rather than ``try`` inside the loop: the loop stays the loop, and the one place that decides
what a failure may save is here, with its own tests (``tests/test_train_failures.py``).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Callable

from zoo.contracts.executor import StopRequested
from zoo.errors import CheckpointError, ZooError
from zoo.runtime import distributed as dist
from zoo.training.state import saved_step


class RunFailed(ZooError):
    """Training stopped on an error; the message names the run folder and the command that resumes it.
    ``exit_code`` is what the command line exits with (130 after Ctrl-C, as shells expect)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NonFiniteLoss(ZooError):
    """A training step whose loss (or gradient) is NaN or infinite: raised before the optimiser applies it,
    so the weights stay those of the last good step."""


class RunGuard:
    """Tracks, for one run, whether the model is between steps and which step's state is on disk.
    ``writer``: whether this process writes the training state (rank 0 under ``torchrun``); another rank
    reports the state on disk instead of its own step."""

    def __init__(self, out: Path, writer: bool = True) -> None:
        self.out = out
        self.writer = writer
        self.active = False  # True once the loop runs: failures before it are passed on unchanged
        self.between_steps = True
        self.step = 0  # the last completed step
        self.total: int | None = None
        self.saved_step: int | None = None  # the step of the state on disk
        self._save: Callable[[], None] | None = None
        self._close: list[Callable[[], Any]] = []

    def start(self, step: int, total: int, save: Callable[[], None], saved_step: int | None,
              close: list[Callable[[], Any]] | None = None) -> None:
        """The loop begins at ``step``; ``save()`` writes the state of the current step (rank 0 only)."""
        self.active, self.step, self.total, self._save, self.saved_step = True, step, total, save, saved_step
        self._close = list(close or [])

    def step_begins(self) -> None:
        self.between_steps = False

    def step_done(self, step: int) -> None:
        self.between_steps, self.step = True, step

    def save(self) -> None:
        """Write the state of the current step (the loop's scheduled checkpoints come through here)."""
        assert self._save is not None
        self._save()
        self.saved_step = self.step

    def failure(self, exc: BaseException) -> RunFailed | None:
        """The error to raise for ``exc`` after saving what can be saved; None when the loop never
        started (a setup error: raise it as it is)."""
        if not self.active or isinstance(exc, RunFailed):
            return None
        self.active = False
        for close in self._close:
            try:
                close()
            except Exception:  # noqa: BLE001 - a progress bar that cannot close must not hide the error
                pass
        interrupted = isinstance(exc, KeyboardInterrupt)
        if interrupted:
            what = "interrupted (Ctrl-C)"
        elif dist.is_peer_failure(exc):
            what = (f"another process of this torchrun job stopped (its own message says why; "
                    f"torch.distributed: {dist.peer_detail(exc)})")
        else:
            what = f"{type(exc).__name__}: {str(exc).rstrip('.')}"
        if isinstance(exc, StopRequested):  # a job's executor asked it to stop (preemption, time limit, cancel)
            what = f"stopped on request ({exc.reason})"
        where = f"training stopped at step {self.step} of {self.total}" if self.between_steps else (
            f"training failed during step {self.step + 1} of {self.total}"
        )
        if dist.is_distributed():
            where = f"rank {dist.rank()} of {dist.world_size()}: {where}"
        state = self.out / "state.safetensors"
        if not self.writer:
            return RunFailed(f"{where}: {what}. {self._on_disk(state)} Run folder: {self.out}.",
                             130 if interrupted else 2)
        saved_now, save_error = False, None
        if self.between_steps and self.saved_step != self.step and self._save is not None:
            try:
                self.save()
                saved_now = True
            except BaseException as err:  # noqa: BLE001 - e.g. the disk is still full: say so, keep the cause
                save_error = f"{type(err).__name__}: {err}"
        if self.saved_step == self.step and self.between_steps:
            kept = f"The training state of step {self.step} is in {state}{' (written now)' if saved_now else ''}: no trained step is lost."
        elif self.saved_step is not None:
            redo = f"steps {self.saved_step + 1} to {self.step} will be trained again" if self.step > self.saved_step else "nothing is trained twice"
            why = f"saving the state of step {self.step} failed too ({save_error}); " if save_error else (
                "the failure came in the middle of a step, whose state cannot be saved exactly; "
            )
            kept = f"{why[0].upper()}{why[1:]}the last saved state is step {self.saved_step} in {state} ({redo})."
        else:
            why = f"saving it failed too ({save_error}), and " if save_error else ""
            kept = f"No training state could be saved ({why}no earlier state exists): start the run again."
            return RunFailed(f"{where}: {what}. {kept} Run folder: {self.out}.", 130 if interrupted else 2)
        resume = f"zoo train --resume {shlex.quote(str(self.out))}"
        fix = "" if interrupted else "Fix the cause, then continue with: "
        return RunFailed(
            f"{where}: {what}. {kept} {fix or 'Continue with: '}{resume} (add the same --plugin options if "
            f"the run uses a plugin loaded by hand).",
            130 if interrupted else 2,
        )

    def _on_disk(self, state: Path) -> str:
        """What a rank that does not write the state says about it: the step of the file on disk, read
        back now (rank 0 writes it, and may still be writing a later one as this rank stops)."""
        try:
            on_disk = saved_step(state) if state.exists() else None
        except CheckpointError:
            on_disk = None
        resume = f"zoo train --resume {shlex.quote(str(self.out))}"
        if on_disk is None:
            return (f"This rank writes no training state (rank 0 does), and {state} holds none now: rank 0's "
                    f"message says whether it saved one; without one, start the run again.")
        redo = f"; steps {on_disk + 1} to {self.step} will be trained again" if self.step > on_disk else ""
        return (f"This rank writes no training state (rank 0 does): {state} holds step {on_disk}, saved by rank 0"
                f"{redo} (rank 0's message says if it saved a later one). Continue with: {resume}.")
