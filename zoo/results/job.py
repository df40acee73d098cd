"""One run of a sweep, as a job: train (or resume) and evaluate run ``NAME`` of the compare in ``OUT`` into
its own folder, and nothing else (the results database is written by the driver alone, ``zoo.results.sweep``).

What the job needs it reads from the compare folder (``compare.json``: the same plan the driver made), so
a job is two strings, as cheap to pickle for submitit as to pass on a command line:
``python -m zoo.results.job OUT NAME [--key KEY]`` (``--key`` only marks the process, so the local executor
can find a job it started after a crash of the driver).

A job that fails writes ``failed.json`` into its run folder (the error and its traceback) for the driver to
report. SIGTERM (``scancel``, a local kill) asks training to save its state at the next step and stop: run
again, the run continues bit-identically from there.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from zoo.contracts.executor import StopRequested, clear_stop, request_stop, stop_requested
from zoo.errors import ZooError
from zoo.files import atomic_write
from zoo.registry.loading import load_plugin
from zoo.registry.manager import get_plugin_manager
from zoo.runtime import distributed as dist
from zoo.runtime.threads import configure_threads
from zoo.results.compare import CompareConfig, plan, train_and_evaluate
from zoo.training.runs import load_split

#: a run folder's note of a failed job (the driver shows it with the end of the job's log)
FAILED = "failed.json"


def load_config(out: Path) -> CompareConfig:
    """The compare's settings as the driver wrote them (``compare.json``)."""
    path = out / "compare.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ZooError(f"{path}: cannot read the compare's settings ({exc}); is {out} a zoo compare folder?") from exc
    data["metrics"] = tuple(data.get("metrics", ()))
    return CompareConfig(**data)


def run_job(out: str | Path, name: str, plugins: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train and evaluate run ``name`` of the compare in ``out`` (resuming from its saved state when it has
    one); returns its summary. On failure ``failed.json`` records why, and the error is raised again."""
    out = Path(out)
    run_dir = out / name
    for plugin in plugins:  # plugins the driver's command line loaded by hand (--plugin), unless already here
        if not get_plugin_manager().has_plugin(plugin):
            load_plugin(plugin)
    configure_threads()  # the job's own CPUs (its affinity set), unless ZOO_NUM_THREADS / OMP_NUM_THREADS say
    clear_stop()
    previous = _on_sigterm()
    dist.init_from_env()
    try:
        (run_dir / FAILED).unlink(missing_ok=True)
        cfg = load_config(out)
        specs = dict(plan(cfg))
        if name not in specs:
            raise ZooError(f"{out / 'compare.json'} plans no run named {name!r}; its runs: {', '.join(specs)}")
        test_set = load_split(specs[name], cfg.split)
        return train_and_evaluate(cfg, out, name, specs[name], test_set, progress=False)
    except BaseException as exc:
        if dist.rank() == 0:
            _write_failure(run_dir, exc)
        raise
    finally:
        dist.cleanup()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _on_sigterm() -> Any:
    """SIGTERM: save at the next step boundary and stop (only in the main thread, where handlers live)."""
    try:
        return signal.signal(signal.SIGTERM, lambda signum, frame: request_stop("terminated (SIGTERM)"))
    except ValueError:  # not the main thread: leave signals as they are
        return None


def _write_failure(run_dir: Path, exc: BaseException) -> None:
    stopped = exc if isinstance(exc, StopRequested) else getattr(exc, "__cause__", None)
    asked = stop_requested()  # a signal came first (scancel, a kill): say so before what it broke
    note = {
        "error": (f"{asked}; then " if asked and not isinstance(stopped, StopRequested) else "") + f"{type(exc).__name__}: {exc}",
        "stopped": stopped.reason if isinstance(stopped, StopRequested) else None,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-8000:],
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / FAILED, lambda tmp: Path(tmp).write_text(json.dumps(note, indent=1)))
    except OSError:
        pass  # the folder cannot be written (full disk): the driver reports a job that ended without a word


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.results.job", description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("name")
    p.add_argument("--key", default=None, help="marks this process for the executor that started it")
    p.add_argument("--plugin", action="append", default=[])
    args = p.parse_args(argv)
    print(json.dumps({"job": args.name, "pid": os.getpid(), "cpus": sorted(os.sched_getaffinity(0)),
                      "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}), flush=True)
    try:
        summary = run_job(args.out, args.name, tuple(args.plugin))
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if dist.rank() == 0:
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
