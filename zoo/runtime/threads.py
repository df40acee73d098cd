"""How many CPU threads torch uses in a ``zoo`` command.

Why: torch's default is one thread per core, per process. Two processes on two cores each using two
threads ran 6x slower than one thread each (they fight over the cores), and under ``torchrun`` every
local rank would take every core. The ``zoo`` command therefore sets torch's intra-op thread count once,
at start-up (``zoo.cli.main``), by these rules, first match wins:

1. ``ZOO_NUM_THREADS=N``: N threads, always (the zoo's own switch).
2. ``OMP_NUM_THREADS`` set by the user: left alone (torch already follows it). Under ``torchrun`` with
   several local ranks, ``OMP_NUM_THREADS=1`` is what torchrun itself sets when it is unset, so that value
   is treated as unset there (set ``ZOO_NUM_THREADS=1`` to really mean one).
3. Otherwise: the cores this process may run on (its CPU affinity, at most torch's own default) divided
   among the local ranks (``LOCAL_WORLD_SIZE``, 1 without torchrun), at least 1.

The Python API (``import zoo``) never changes the thread count: a program's own ``torch.set_num_threads``
or ``OMP_NUM_THREADS`` stays as it is. Run several ``zoo`` processes side by side on one machine? Give
each ``OMP_NUM_THREADS=cores/processes``.
"""

from __future__ import annotations

import os
from typing import Mapping

import torch

from zoo.errors import ZooError

ENV = "ZOO_NUM_THREADS"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(environ: Mapping[str, str], cores: int, torch_default: int) -> int | None:
    """The thread count the rules above give, or None to leave torch as it is."""
    if environ.get(ENV, "").strip():
        try:
            n = int(environ[ENV])
            if n < 1:
                raise ValueError
        except ValueError:
            raise ZooError(f"{ENV} must be a whole number ≥ 1 (threads per process), got {environ[ENV]!r}") from None
        return n
    local = max(int(environ.get("LOCAL_WORLD_SIZE", "1") or 1), 1)
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    if omp and not (local > 1 and omp == "1"):
        return None
    available = cores if omp else min(cores, torch_default)
    return max(available // local, 1)


def configure_threads() -> int:
    """Apply :func:`default_threads` to torch; returns the thread count in use."""
    n = default_threads(os.environ, _cores(), torch.get_num_threads())
    if n is not None and n != torch.get_num_threads():
        torch.set_num_threads(n)
    return torch.get_num_threads()
