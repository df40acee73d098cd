"""``slurm``: each run of a sweep a Slurm job, submitted through ``submitit`` (several ready runs at once go
in as one job array).

Options (``--executor-set KEY=VALUE``): ``partition``, ``time`` (minutes), ``gpus_per_run`` (more than one:
one task per GPU, DistributedDataParallel over them), ``cpus_per_run``, ``mem`` (e.g. ``32G``),
``account``, ``qos``, ``sbatch`` (any further sbatch options as a mapping, e.g.
``sbatch='{constraint: a100, exclude: node7}'``), ``setup`` (shell lines run before the job, e.g.
``setup='[module load cuda]'``), ``signal_delay_s`` (how long before the time limit Slurm warns the job),
``max_requeue`` (how often a run may be requeued after its time ran out), ``jobs`` (at most this many of
the sweep's array tasks run at once), ``array`` (false: one sbatch per run), ``requeue_at_once`` (Slurm
holds a requeued job back for about two minutes; true releases it at once).

A job warned of its time limit or of preemption (SIGUSR2) saves its training state at the next step, is
requeued, and continues bit-identically from that state. ``scancel`` (SIGTERM) saves the state too and
ends the job as failed; the same ``zoo compare`` command submits it again and it continues from there.
"""

from __future__ import annotations

import getpass
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import submitit

import zoo
from zoo import Executor, JobState, StopRequested, Task

_QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SPECIAL_EXIT",
           "RESIZING", "SIGNALING", "STAGE_OUT"}
_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED"}


def _stopped_by(exc: BaseException, word: str) -> bool:
    """Whether ``exc`` (or what caused it) is a stop requested for ``word`` (e.g. SIGUSR2)."""
    while exc is not None:
        if isinstance(exc, StopRequested) and word in exc.reason:
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


class SlurmJob(submitit.helpers.Checkpointable):
    """What a Slurm job runs: ``function()`` (one run of the sweep), with SIGUSR2 (time limit near, or
    preemption) turned into a stop at the next training step, then submitit's requeue."""

    def __init__(self, function: Callable[[], Any], distributed: bool = False) -> None:
        self.function = function
        self.distributed = distributed

    def __call__(self) -> Any:
        if self.distributed:  # several tasks: the torch.distributed variables torchrun would set
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        requeue = signal.getsignal(signal.SIGUSR2)  # submitit's: checkpoint(), scontrol requeue, exit
        warned: list[int] = []

        def on_warning(signum: int, frame: Any) -> None:
            warned.append(signum)
            zoo.request_stop("preempted or out of time (SIGUSR2)")

        signal.signal(signal.SIGUSR2, on_warning)
        try:
            return self.function()
        except BaseException as exc:
            # stopped at a step with its state saved; or warned outside training (Slurm signals every process
            # of the job, so the evaluation's Java tokenizer may have died of it): either way, run again
            if (warned or _stopped_by(exc, "SIGUSR2")) and callable(requeue):
                print(f"zoo: {exc}\nzoo: requeueing this job", file=sys.stderr, flush=True)
                requeue(signal.SIGUSR2, None)  # raises SystemExit after `scontrol requeue`
            raise


class SlurmExecutor(Executor):
    """Each run a Slurm job through submitit: partition, time (minutes), GPUs and CPUs per run, account,
    QoS, further sbatch options; requeued with exact resume when its time runs out or it is preempted."""

    capacity = None  # the cluster's queue decides
    dependencies = True  # an SCST run waits in the queue for its XE run (afterok)

    def __init__(self, partition: str | None = None, time: int = 60, gpus_per_run: int = 0,
                 cpus_per_run: int | None = None, mem: str | None = None, account: str | None = None,
                 qos: str | None = None, sbatch: dict | None = None, setup: list | None = None,
                 signal_delay_s: int = 90, max_requeue: int = 3, jobs: int | None = None, array: bool = True,
                 requeue_at_once: bool = False) -> None:
        if not isinstance(time, int) or time < 1:
            raise zoo.ZooError(f"--executor-set time={time!r}: the time limit is whole minutes, 1 or more")
        if sbatch is not None and not isinstance(sbatch, dict):
            raise zoo.ZooError(f"--executor-set sbatch={sbatch!r}: give a mapping, e.g. sbatch='{{constraint: a100}}'")
        self.partition, self.time, self.gpus_per_run, self.cpus_per_run = partition, time, int(gpus_per_run), cpus_per_run
        self.mem, self.account, self.qos, self.sbatch = mem, account, qos, dict(sbatch or {})
        self.setup, self.signal_delay_s, self.max_requeue = list(setup or []), int(signal_delay_s), int(max_requeue)
        self.jobs, self.array, self.requeue_at_once = jobs, bool(array), bool(requeue_at_once)

    def describe(self) -> str:
        where = f"partition {self.partition}" if self.partition else "default partition"
        return f"slurm: {where}, {self.time} min per job, {self.gpus_per_run} GPU(s) per run"

    def parameters(self, name: str) -> dict[str, Any]:
        """submitit's ``update_parameters`` for jobs named ``name``."""
        tasks = max(self.gpus_per_run, 1)
        params: dict[str, Any] = {
            "job_name": name, "time": self.time, "signal_delay_s": self.signal_delay_s, "ntasks_per_node": tasks,
            "nodes": 1, "stderr_to_stdout": True, "setup": self.setup, "additional_parameters": dict(self.sbatch),
        }
        if self.jobs:
            params["array_parallelism"] = int(self.jobs)
        for key, value in (("partition", self.partition), ("cpus_per_task", self.cpus_per_run), ("mem", self.mem),
                           ("account", self.account), ("qos", self.qos)):
            if value is not None:
                params[key] = value
        if self.gpus_per_run:
            params["gpus_per_node"] = self.gpus_per_run
        return params

    def submit(self, tasks: Sequence[Task], folder: Path) -> list[str]:
        """The tasks without dependencies as one job array (or one job); each task that waits for another
        job as a job of its own with ``--dependency=afterok:ID`` (dropped by Slurm when that job fails)."""
        if not tasks:
            return []
        batch = tasks[0].key.split("#")[0]
        free = [i for i, t in enumerate(tasks) if not t.after]
        ids: dict[int, str] = {}
        try:
            if free:
                ex = self._executor(folder, batch)
                wrapped = [SlurmJob(tasks[i].function, distributed=self.gpus_per_run > 1) for i in free]
                if self.array and len(free) > 1:
                    with ex.batch():
                        jobs = [ex.submit(w) for w in wrapped]
                else:
                    jobs = [ex.submit(w) for w in wrapped]
                ids.update({i: str(j.job_id) for i, j in zip(free, jobs)})
            for i, task in enumerate(tasks):
                if task.after:
                    ex = self._executor(folder, f"{batch}.{task.key.split('#')[-1]}",
                                        dependency=f"afterok:{':'.join(task.after)}")
                    ids[i] = str(ex.submit(SlurmJob(task.function, distributed=self.gpus_per_run > 1)).job_id)
        except (submitit.core.utils.FailedJobError, subprocess.CalledProcessError, OSError) as exc:
            raise zoo.ZooError(f"sbatch refused the jobs of {', '.join(t.name for t in tasks)}: {exc}") from exc
        return [ids[i] for i in range(len(tasks))]

    def _executor(self, folder: Path, name: str, dependency: str | None = None) -> submitit.SlurmExecutor:
        ex = submitit.SlurmExecutor(folder=folder / "slurm", max_num_timeout=self.max_requeue)
        params = self.parameters(name)
        if dependency:
            params["additional_parameters"] = {**params["additional_parameters"], "dependency": dependency,
                                               "kill_on_invalid_dep": "yes"}
        ex.update_parameters(**params)
        return ex

    def _squeue(self, *args: str) -> list[list[str]]:
        try:
            text = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r|%j", *args],
                                  capture_output=True, text=True, timeout=60, check=True).stdout
        except FileNotFoundError as exc:
            raise zoo.ZooError("squeue not found: the slurm executor needs Slurm's commands on this machine") from exc
        except subprocess.CalledProcessError as exc:
            raise zoo.ZooError(f"squeue failed ({exc.stderr.strip()}); is Slurm reachable from here?") from exc
        return [line.split("|", 3) for line in text.splitlines() if line.count("|") >= 3]

    def states(self, job_ids: Sequence[str], folder: Path) -> dict[str, JobState]:
        wanted = set(job_ids)
        out: dict[str, JobState] = {}
        for job_id, state, reason, _ in self._squeue():
            if job_id not in wanted:
                continue
            state = state.split()[0]
            if state in _QUEUED:
                out[job_id] = JobState.QUEUED
                if self.requeue_at_once and reason == "BeginTime":  # a requeued job Slurm holds back
                    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"],
                                   capture_output=True, timeout=60)
            elif state in _RUNNING:
                out[job_id] = JobState.RUNNING
        return out

    def find(self, key: str, folder: Path) -> str | None:
        name, _, index = key.partition("#")
        alone = [job_id for job_id, _, _, job_name in self._squeue("-n", f"{name}.{index}")
                 if job_name == f"{name}.{index}"]
        if alone:  # submitted on its own (it waited for another job)
            return alone[0]
        ids = [job_id for job_id, _, _, job_name in self._squeue("-n", name) if job_name == name]
        if not ids:
            return None
        if len(ids) == 1 and "_" not in ids[0]:
            return ids[0]
        base = ids[0].split("_")[0]
        candidate = f"{base}_{index or 0}"
        return candidate if candidate in ids else None

    def log_path(self, job_id: str, task: Task, folder: Path) -> Path:
        return folder / "slurm" / f"{job_id}_0_log.out"

    def cancel(self, job_ids: Sequence[str], folder: Path) -> None:
        if job_ids:
            subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60)


@zoo.hookimpl
def zoo_register(registry) -> None:  # noqa: ANN001 - the registry, as every plugin receives it
    registry.add_executor("slurm", SlurmExecutor)
