"""How many CPU threads torch uses in a ``zoo`` command, and how that follows the CPUs actually free.

Why: torch's default is one thread per core, per process, and its OpenMP threads spin while they wait for
each other. On a machine where other processes hold cores that collapses: measured on 2 cores, training
``gru-attn`` with 2 threads ran at 445 img/s alone but 122 img/s beside one busy process (1 thread: 315),
and 31 img/s at a load of 7 (1 thread: 235); every team waits for its thread that lost its core. No fixed
count wins everywhere, so the ``zoo`` command chooses one at start-up and, unless told a number, adjusts it
while it trains. The rules, first match wins:

1. ``ZOO_NUM_THREADS=N``: N threads, always, never adjusted (the zoo's own switch).
2. ``OMP_NUM_THREADS`` set by the user: left alone and never adjusted (torch already follows it). Under
   ``torchrun`` with several local ranks, ``OMP_NUM_THREADS=1`` is what torchrun itself sets when it is
   unset, so that value is treated as unset there (set ``ZOO_NUM_THREADS=1`` to really mean one).
3. Otherwise the **budget**: the cores this process may really use (:func:`zoo.runtime.cpus.usable_cores`:
   its CPU affinity, capped by the cgroup CPU quota, where ``os.cpu_count()`` counts the host; without a
   user's ``OMP_NUM_THREADS``, at most torch's own default) divided among the local ranks
   (``LOCAL_WORLD_SIZE``, 1 without torchrun), at least 1. The command starts with the budget; before
   each training step (:func:`adapt_threads`, cheap: a clock read) it re-evaluates, about once a second
   (the first time before the first step, over the command's start-up): how many of its CPUs other
   processes kept busy since the last reading (``/proc/stat``'s busy time of our CPUs less our own,
   :class:`zoo.runtime.cpus.CpuMeter`); a CPU counts as taken when others used more than
   :data:`TAKEN_AT` of a core, and the count becomes min(budget, CPUs − taken), at least 1. It drops at
   once (a spinning team beside a busy process is what collapses) and rises only after
   :data:`RISE_AFTER` readings in a row agree (no flapping on a burst).

Concurrent runs on one machine divide the cores by giving each its own CPU affinity (``taskset``,
``os.sched_setaffinity``); each then counts only its own CPUs, and its threads follow. A change of affinity
while running is seen at the next reading.

Why not ``OMP_WAIT_POLICY=PASSIVE``: threads that sleep instead of spinning do not collapse (274 img/s
beside a busy process) but cost a fifth of the idle speed (350 vs 445). And torch's OpenMP here is GNU
libgomp (``torch/lib/libgomp.so.1``), which reads ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` once, when
torch is loaded: the ``zoo`` console script imports ``zoo`` (and torch) before ``zoo.cli.main`` runs, so
the command could set them only by starting itself again, and still not know whether the machine is busy.

The thread count changes the last bits of a result (a sum split among 2 threads rounds differently), so
an adapting run is repeatable to the bit only where the load was the same. For a run compared bit for bit
(a resume against an uninterrupted run, one machine against another), fix the count: ``ZOO_NUM_THREADS=N``.

The Python API (``import zoo``) never changes the thread count: a program's own ``torch.set_num_threads``
or ``OMP_NUM_THREADS`` stays as it is, and :func:`adapt_threads` does nothing unless the ``zoo`` command
(:func:`configure_threads`) turned adaptation on.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from zoo.errors import ZooError
from zoo.runtime.cpus import CpuMeter, affinity, usable_cores

ENV = "ZOO_NUM_THREADS"
#: seconds between two readings of how busy the CPUs are
INTERVAL_S = 1.0
#: a CPU counts as taken by others when they used more than this fraction of a core over a reading: a
#: thread that shares its core spins away the team's time, and a busy process beside a spinning team of
#: ours gets only about two thirds of its core, so the bar sits below that
TAKEN_AT = 0.4
#: readings in a row that must ask for more threads before the count rises
RISE_AFTER = 2

_governor: "ThreadGovernor | None" = None


def _cores() -> int:
    return usable_cores()


def local_ranks(environ: Mapping[str, str]) -> int:
    """Processes of this job on this machine (``LOCAL_WORLD_SIZE`` under torchrun), at least 1."""
    try:
        return max(int(environ.get("LOCAL_WORLD_SIZE", "1") or 1), 1)
    except ValueError:
        raise ZooError(f"LOCAL_WORLD_SIZE must be a whole number, got {environ['LOCAL_WORLD_SIZE']!r}") from None


def _omp_is_users(environ: Mapping[str, str]) -> bool:
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    return bool(omp) and not (local_ranks(environ) > 1 and omp == "1")


def default_threads(environ: Mapping[str, str], cores: int, torch_default: int) -> int | None:
    """The thread count the rules above give at start-up, or None to leave torch as it is."""
    if environ.get(ENV, "").strip():
        try:
            n = int(environ[ENV])
            if n < 1:
                raise ValueError
        except ValueError:
            raise ZooError(f"{ENV} must be a whole number ≥ 1 (threads per process), got {environ[ENV]!r}") from None
        return n
    if _omp_is_users(environ):
        return None
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    available = cores if omp else min(cores, torch_default)
    return max(available // local_ranks(environ), 1)


def adapts(environ: Mapping[str, str]) -> bool:
    """Whether rule 3 applies: no ``ZOO_NUM_THREADS``, no user's ``OMP_NUM_THREADS``."""
    return not environ.get(ENV, "").strip() and not _omp_is_users(environ)


def threads_for(budget: int, cpus: int, others: float) -> int:
    """The thread count wanted when other processes used ``others`` cores' worth of our ``cpus`` CPUs:
    one per CPU they left us (a CPU is taken once they used more than :data:`TAKEN_AT` of it), at most
    ``budget``, at least 1."""
    taken = math.floor(max(others, 0.0) + 1.0 - TAKEN_AT)
    return max(1, min(budget, cpus - taken))


@dataclass
class ThreadGovernor:
    """Re-evaluates torch's thread count from how busy other processes keep our CPUs (rule 3 above).

    :meth:`tick` is called often (each training step); it reads the CPUs only when ``interval`` seconds
    have passed. ``budget_of`` gives the budget for the current CPUs (re-read at each reading: an affinity
    changed while running counts); ``apply`` sets the count (torch's, by default). torch's thread count
    belongs to the thread that sets it (OpenMP), so ticks must come from the thread that runs the work."""

    budget_of: Callable[[frozenset[int]], int]
    interval: float = INTERVAL_S
    apply: Callable[[int], None] = torch.set_num_threads
    current: Callable[[], int] = torch.get_num_threads
    clock: Callable[[], float] = time.monotonic
    cpus_of: Callable[[], frozenset[int]] = affinity
    readings: list[tuple[float, int]] = field(default_factory=list)  # (others, chosen): the last few, newest last
    ticks: int = 0  # calls of tick() so far
    start: int = 0  # the count at start-up (stop_adapting puts it back); 0: none to put back
    _meter: CpuMeter | None = None
    _next: float = 0.0
    _rises: int = 0

    def tick(self) -> int | None:
        """Read the CPUs and maybe change the thread count, when a reading is due; returns the count chosen
        at this reading (None when none was due, or nothing could be read)."""
        self.ticks += 1
        now = self.clock()
        if now < self._next:
            return None
        self._next = now + self.interval
        cpus = self.cpus_of()
        if self._meter is None or self._meter.cpus != cpus:
            self._meter = CpuMeter(cpus)
        others = self._meter.others()
        if others is None:
            return None
        return self.decide(others, len(cpus), self.budget_of(cpus))

    def decide(self, others: float, cpus: int, budget: int) -> int:
        """Apply one reading: fewer threads at once, more only after :data:`RISE_AFTER` readings ask for it."""
        have, want = self.current(), threads_for(budget, cpus, others)
        chosen = have
        if want < have:
            chosen, self._rises = want, 0
        elif want > have:
            self._rises += 1
            if self._rises >= RISE_AFTER:
                chosen, self._rises = want, 0
        else:
            self._rises = 0
        if chosen != have:
            self.apply(chosen)
        self.readings = [*self.readings[-9:], (others, chosen)]
        return chosen


def configure_threads(environ: Mapping[str, str] | None = None) -> int:
    """Apply the rules above to torch at a ``zoo`` command's start-up; with rule 3, training re-evaluates
    the count (:func:`adapt_threads`). Returns the thread count in use."""
    global _governor
    env = os.environ if environ is None else environ
    torch_default = torch.get_num_threads()
    n = default_threads(env, _cores(), torch_default)
    if n is not None and n != torch.get_num_threads():
        torch.set_num_threads(n)
    _governor = None
    if adapts(env):
        cap = None if env.get("OMP_NUM_THREADS", "").strip() else torch_default  # torchrun's 1 is no cap
        ranks = local_ranks(env)

        def budget_of(cpus: frozenset[int]) -> int:
            cores = usable_cores(cpus)
            return max(min(cores, cap or cores) // ranks, 1)

        _governor = ThreadGovernor(budget_of, start=torch.get_num_threads())
        _governor.tick()  # the first reading starts now: the first step already knows how busy the set-up was
    return torch.get_num_threads()


def adapt_threads() -> int | None:
    """The training loop's hook, once per step: re-evaluates the thread count when the ``zoo`` command
    turned adaptation on (:func:`configure_threads`, rule 3); otherwise does nothing. Returns the count
    chosen at a reading, else None."""
    return _governor.tick() if _governor is not None else None


def stop_adapting() -> None:
    """End the adaptation :func:`configure_threads` started (the ``zoo`` command calls it when it returns,
    so a program that called ``zoo.cli.main`` goes on with a fixed count)."""
    global _governor
    if _governor is not None and _governor.start and torch.get_num_threads() != _governor.start:
        # put back the count the command started with: the next command in this process (a program calling
        # zoo.cli.main twice, the benchmark) must not take a count lowered for a busy moment as torch's default
        torch.set_num_threads(_governor.start)
    _governor = None


def governor() -> ThreadGovernor | None:
    """The adaptation in force (None: the thread count is fixed, or this is the Python API)."""
    return _governor
