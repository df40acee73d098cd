"""The executor contract: where the runs of a ``zoo compare`` are carried out (this machine, a Slurm cluster,
or whatever a plugin adds: Ray, Kubernetes...).

An executor is registered like any other part (``registry.add_executor("name", MyExecutor)``); ``zoo
compare --executor NAME --executor-set KEY=VALUE`` builds it with those keyword options, which are checked
against its ``__init__`` like a decoder's. The driver (``zoo.results.sweep``) owns everything else: which
runs are ready, the job ledger in the compare folder, reattaching, the live view, the results database.
An executor only starts jobs and says where they stand:

- :meth:`Executor.submit` starts the given tasks (a job each) and returns their job ids, in order. A task
  carries both a picklable ``function`` (``task.function()`` does the whole run in this process) and the
  equivalent ``command`` (an argv list for a fresh process); use whichever suits the system.
- :meth:`Executor.states` maps job ids to :class:`JobState` values; an id the system no longer knows is
  left out (the driver then reads the run folder: the job either wrote its evaluation or its failure).
- :meth:`Executor.find` finds the job of a task by its unique ``task.key`` (the driver asks after a crash
  between submitting and writing down the id, so nothing is submitted twice).

A job that is asked to stop (``request_stop``, e.g. from a signal handler) saves its training state at the
next step and raises :class:`StopRequested`; rerun, it continues bit-identically from that state. A
signal handler must do no more than call :func:`request_stop`: the loop stops at a step boundary.

May import: ``zoo.errors``. Nothing else in the zoo.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence


class JobState(str, enum.Enum):
    """Where a job stands, as far as its executor knows."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # exited without error (the driver still reads the run folder)
    FAILED = "failed"  # exited with an error, was cancelled, or was killed


@dataclass
class Task:
    """One run to carry out: ``function()`` (picklable) or ``command`` (argv) trains and evaluates it into
    ``run_dir``. ``key`` is unique to this submission (compare folder, run, attempt); ``name`` is the run's
    name; ``log`` is where the job's output should go when the executor chooses the file."""

    name: str
    key: str
    run_dir: Path
    function: Callable[[], Any]
    command: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    #: job ids that must finish successfully before this one starts (only for executors with
    #: ``dependencies = True``; the others get a task only once what it depends on is done)
    after: list[str] = field(default_factory=list)


class Executor:
    """Base class of executors. Subclasses take their options as keyword arguments with defaults (plain
    JSON values: ``zoo info NAME`` lists them, ``--executor-set`` sets them)."""

    #: at most this many jobs of the sweep at once (None: no limit; the cluster's queue decides)
    capacity: int | None = None
    #: True: :meth:`submit` honours ``task.after`` (the job waits in the queue, e.g. Slurm's ``afterok``, and
    #: is dropped when what it waits for fails), so a dependent run is submitted with its starting point
    #: and the sweep goes on without the driver
    dependencies: bool = False

    def submit(self, tasks: Sequence[Task], folder: Path) -> list[str]:
        """Start ``tasks``; return their job ids in the same order. ``folder`` is the compare folder's
        place for the executor's own files (scripts, logs)."""
        raise NotImplementedError

    def states(self, job_ids: Sequence[str], folder: Path) -> dict[str, JobState]:
        """The state of each id the system still knows (ids it has forgotten are left out)."""
        raise NotImplementedError

    def find(self, key: str, folder: Path) -> str | None:
        """The job id of a task submitted with ``key`` that is still known, else None."""
        return None

    def log_path(self, job_id: str, task: Task, folder: Path) -> Path:
        """The file holding a job's output (the driver shows its end when the job fails)."""
        return task.log

    def cancel(self, job_ids: Sequence[str], folder: Path) -> None:
        """Stop these jobs (the driver cancels a run that can no longer start, e.g. its XE run failed)."""

    def describe(self) -> str:
        """One line for the live view's header."""
        return type(self).__name__


class StopRequested(BaseException):
    """Raised at a step boundary after :func:`request_stop`: the training state of that step has been saved.
    A ``BaseException`` (like ``KeyboardInterrupt``) so that no ``except Exception`` swallows it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_stop: list[str] = []


def request_stop(reason: str = "stop") -> None:
    """Ask the training loop of this process to save its state at the next step boundary and raise
    :class:`StopRequested` (safe to call from a signal handler: it only records the request)."""
    _stop.append(reason)


def stop_requested() -> str | None:
    """The pending stop request's reason, or None (the training loop checks this after every step)."""
    return _stop[0] if _stop else None


def clear_stop() -> None:
    _stop.clear()
