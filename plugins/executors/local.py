"""``local``: the runs of a sweep as processes on this machine, up to ``jobs`` at once.

With GPUs, each run gets its own device (``CUDA_VISIBLE_DEVICES``), or ``gpus_per_run`` devices through
``torchrun`` (one process per device, DistributedDataParallel). On CPUs, the cores this process may use are
divided between the runs: each job gets a disjoint CPU affinity set, and the zoo's thread settings count
the cores of that set, so two runs do not fight over the same cores (a user's ``OMP_NUM_THREADS`` or
``ZOO_NUM_THREADS`` is passed on untouched and still wins).

Jobs are started in their own session: Ctrl-C in the terminal of ``zoo compare`` or a closed terminal
leaves them running, and the same command reattaches (a job id is ``PID:START`` so a recycled PID is
never mistaken for the job).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Sequence

import torch

import zoo
from zoo import Executor, JobState, Task

_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (the ones it lists, when set)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    return [str(i) for i in range(torch.cuda.device_count())]


def cpu_slots(cpus: Sequence[int], jobs: int) -> list[list[int]]:
    """``cpus`` divided into ``jobs`` disjoint, contiguous sets (as equal as they go); with more jobs than
    CPUs, each job gets one CPU and CPUs are shared round-robin."""
    cpus = sorted(cpus)
    if jobs >= len(cpus):
        return [[cpus[i % len(cpus)]] for i in range(jobs)]
    size, extra = divmod(len(cpus), jobs)
    out, start = [], 0
    for i in range(jobs):
        n = size + (1 if i < extra else 0)
        out.append(cpus[start:start + n])
        start += n
    return out


def gpu_slots(gpus: Sequence[str], per_run: int) -> list[list[str]]:
    """``gpus`` in groups of ``per_run`` (a remainder too small for a run is left idle)."""
    if per_run < 1:
        raise zoo.ZooError(f"--executor-set gpus_per_run={per_run}: give 1 or more")
    if len(gpus) < per_run:
        raise zoo.ZooError(f"--executor-set gpus_per_run={per_run}: only {len(gpus)} GPU(s) visible "
                           f"({', '.join(gpus) or 'none'}); ask for fewer")
    return [list(gpus[i:i + per_run]) for i in range(0, len(gpus) - per_run + 1, per_run)]


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (with the PID, a process's identity); None when
    no such process lives (a zombie counts as gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return fields[19]


class LocalExecutor(Executor):
    """Runs on this machine: up to ``jobs`` at once; ``devices``: ``auto`` (every visible GPU, else CPUs),
    ``cpu``, or GPU ids ``0,1,2,3``; ``gpus_per_run`` > 1 trains each run on that many GPUs through torchrun."""

    def __init__(self, jobs: int | None = None, devices: str = "auto", gpus_per_run: int = 1) -> None:
        if jobs is not None and (not isinstance(jobs, int) or jobs < 1):
            raise zoo.ZooError(f"--jobs {jobs}: give a whole number of runs at once, 1 or more")
        self.gpus_per_run = int(gpus_per_run)
        if str(devices) == "cpu":
            gpus: list[str] = []
        elif str(devices) == "auto":
            gpus = visible_gpus()
        else:
            gpus = [d.strip() for d in str(devices).split(",") if d.strip()]
        # a slot: the GPUs (as CUDA_VISIBLE_DEVICES lists them) or the CPUs of one run at a time
        self.cpu_sets: list[list[int]] | None = None
        if gpus:
            groups = gpu_slots(gpus, self.gpus_per_run)
            self.slots = [",".join(group) for group in (groups[:jobs] if jobs else groups)]
        else:
            self.cpu_sets = cpu_slots(sorted(os.sched_getaffinity(0)), jobs or 1)
            self.slots = [",".join(map(str, s)) for s in self.cpu_sets]
        self.gpus = gpus
        self.capacity = len(self.slots)
        self._busy: dict[str, int] = {}  # job id → slot
        self._children: dict[str, subprocess.Popen] = {}

    def describe(self) -> str:
        return f"local: {self.capacity} at once, {'GPUs' if self.gpus else 'CPUs'} {' | '.join(self.slots)}"

    def launch(self, task: Task, slot: int) -> tuple[list[str], dict[str, str], list[int] | None]:
        """What a task runs with in ``slot``: its argv (torchrun for several GPUs), the environment changes,
        the CPU affinity set (None: leave it)."""
        env = dict(task.env)
        argv = list(task.command)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.slots[slot]
            if self.gpus_per_run > 1:
                assert argv[1] == "-m", argv  # [python, -m, module, args...]
                argv = [argv[0], "-m", "torch.distributed.run", "--standalone",
                        f"--nproc_per_node={self.gpus_per_run}", *argv[1:]]
            return argv, env, None
        assert self.cpu_sets is not None
        return argv, env, self.cpu_sets[slot]

    def submit(self, tasks: Sequence[Task], folder: Path) -> list[str]:
        ids = []
        for task in tasks:
            free = [i for i in range(len(self.slots)) if i not in self._busy.values()]
            if not free:
                raise zoo.ZooError(f"local executor: no free slot for {task.name} (all {self.capacity} busy)")
            slot = free[0]
            argv, env, cpus = self.launch(task, slot)
            task.log.parent.mkdir(parents=True, exist_ok=True)
            with open(task.log, "ab") as log:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env={**os.environ, **env}, start_new_session=True,  # Ctrl-C / hang-up of the driver: not ours
                    preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
                )
            job_id = f"{proc.pid}:{_start_time(proc.pid) or 0}:{slot}"
            self._busy[job_id] = slot
            self._children[job_id] = proc
            ids.append(job_id)
        return ids

    def states(self, job_ids: Sequence[str], folder: Path) -> dict[str, JobState]:
        out: dict[str, JobState] = {}
        for job_id in job_ids:
            pid, start, slot = (job_id.split(":") + ["0", "0"])[:3]
            child = self._children.get(job_id)
            if child is not None:
                code = child.poll()  # reaps our own child when it has ended
                if code is None:
                    out[job_id] = JobState.RUNNING
                else:
                    out[job_id] = JobState.DONE if code == 0 else JobState.FAILED
                    self._children.pop(job_id)
                    self._busy.pop(job_id, None)
                continue
            if _start_time(int(pid)) == start:  # started by an earlier driver, still running
                out[job_id] = JobState.RUNNING
                self._busy[job_id] = int(slot)
            else:
                self._busy.pop(job_id, None)
        return out

    def find(self, key: str, folder: Path) -> str | None:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if key.encode() in argv:
                start = _start_time(int(proc.name))
                if start is not None:
                    return f"{proc.name}:{start}:{_slot_of(argv, self)}"
        return None

    def cancel(self, job_ids: Sequence[str], folder: Path) -> None:
        for job_id in job_ids:
            pid, start = job_id.split(":")[:2]
            if _start_time(int(pid)) == start:
                try:
                    os.killpg(int(pid), 15)
                except OSError:
                    pass


def _slot_of(argv: list[bytes], ex: LocalExecutor) -> int:
    """The slot a found process holds: the first one not known to be busy (its exact slot is unknown)."""
    free = [i for i in range(len(ex.slots)) if i not in ex._busy.values()]
    return free[0] if free else 0


@zoo.hookimpl
def zoo_register(registry) -> None:  # noqa: ANN001 - the registry, as every plugin receives it
    registry.add_executor("local", LocalExecutor)


__all__ = ["LocalExecutor", "cpu_slots", "gpu_slots", "visible_gpus"]
