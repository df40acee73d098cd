"""CPU threads beside busy processes: `zoo train` throughput with today's fixed thread count against the
adaptive one (zoo.runtime.threads), alone, beside one and beside two busy processes, in one run.

Each measurement is a real `zoo train` (zoo.cli.main, in this process: the command's own start-up rules),
gru-attn from cached features (resnet10t, frozen, `shapes`), batch 64, `--steps` steps (150, as in the issue)
or `--seconds` (20), whichever comes first (stopped as by Ctrl-C); its figure is the images/s the run logs at
its last step (from its first step: start-up and the one-off feature cache excluded).
Busy processes are `yes > /dev/null` loops, started and killed here as another program's would be (not our
descendants: the zoo counts its children's CPU time as its own), not pinned (the scheduler places them).

- old: today's rule, fixed: min(usable cores, torch's default) threads, spinning OpenMP
  (`ZOO_NUM_THREADS` set to that number: a user's setting turns adaptation off, which is what the old rule was).
- new: the command's default: starts with the budget, re-reads the CPUs other processes use about once a
  second while it trains.

Read the ratios (busy / alone for each setting; new / old per situation), not the img/s: the machine is
shared, and the load average at each situation is recorded beside it.

    python benchmarks/bench_threads.py [--steps 150] [--seconds 20] [--rounds 1] [--nice -10]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report  # noqa: E402

SITUATIONS = {"alone": 0, "beside 1 busy": 1, "beside 2 busy": 2}


@contextlib.contextmanager
def busy(n: int) -> Iterator[None]:
    """``n`` busy loops (``yes > /dev/null``) for the duration of the block, started as another program's
    would be: not descendants of this process (a shell starts each in the background and exits, so they are
    re-parented), since the zoo counts its own children's CPU time as its own (DataLoader workers, Java)."""
    pids = []
    for _ in range(n):
        out = subprocess.run(["sh", "-c", "yes > /dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True)
        pids.append(int(out.stdout.strip()))
    try:
        time.sleep(1.0 if n else 0.0)  # let them take their cores
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # what Ctrl-C does: the command saves its state and returns


def train_once(out: Path, steps: int, seconds: float, threads: int | None) -> tuple[float, int, int]:
    """One `zoo train` in this process, stopped (as by Ctrl-C) after ``seconds`` if it has not finished;
    (its images/s from its first step to its last logged one, the steps it took, the thread count it
    ended with)."""
    import torch

    from zoo.cli import main

    if threads is None:
        os.environ.pop("ZOO_NUM_THREADS", None)
    else:
        os.environ["ZOO_NUM_THREADS"] = str(threads)
    argv = ["train", "--encoder", "resnet10t", "--decoder", "gru-attn", "--tokenizer", "word", "--data", "shapes",
            "--freeze", "--no-pretrained", "--val-split", "none", "--no-progress", "--out", str(out),
            "--set", f"train.steps={steps}", "--set", "train.batch_size=64", "--set", "train.log_every=1",
            "--set", "data.num_train=800"]
    previous = signal.signal(signal.SIGALRM, _stop)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            signal.setitimer(signal.ITIMER_REAL, seconds)
            rc = main(argv)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    log = out / "log.jsonl"
    logged = [json.loads(line) for line in log.read_text().splitlines()] if rc in (0, 2, 130) and log.exists() else []
    logged = [e for e in logged if "images_per_s" in e]
    if not logged:  # not one step in the time: that is the figure
        return 0.0, 0, torch.get_num_threads()
    # the count at its last logged step (the command puts back its start-up count when it returns)
    return float(logged[-1]["images_per_s"]), int(logged[-1]["step"]), int(logged[-1].get("threads", 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="training steps per measurement at most (batch 64)")
    ap.add_argument("--seconds", type=float, default=20.0, help="... and at most this long (then stopped as by Ctrl-C)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat every measurement, alternating the order")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the training and the busy processes at this niceness (negative: root; e.g. -10 on "
                    "a shared machine, so that other users' work weighs less and 'alone' comes nearer to idle)")
    args = ap.parse_args()
    if args.nice:
        os.nice(args.nice)  # the busy processes inherit it: they compete with the training as equals
    for var in ("OMP_NUM_THREADS", "ZOO_NUM_THREADS"):
        if os.environ.get(var):
            sys.exit(f"unset {var}: the benchmark compares the thread rules themselves")
    os.environ.setdefault("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    import torch

    from zoo.runtime.cpus import usable_cores

    old_threads = min(usable_cores(), torch.get_num_threads())  # today's rule, before any run changes torch
    tmp = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    os.environ["ZOO_FEATURE_CACHE"] = str(tmp / "cache")
    train_once(tmp / "warm-up", 2, 600.0, old_threads)  # builds the feature cache once, outside every measurement

    figures: dict[str, dict[str, list[float]]] = {s: {"old": [], "new": []} for s in SITUATIONS}
    ended: dict[str, dict[str, list[int]]] = {s: {"old": [], "new": []} for s in SITUATIONS}
    load: dict[str, list[float]] = {s: [] for s in SITUATIONS}
    k = 0
    for r in range(args.rounds):
        for situation, n in SITUATIONS.items():
            with busy(n):
                load[situation].append(os.getloadavg()[0])
                order = ("old", "new") if r % 2 == 0 else ("new", "old")
                for setting in order:
                    k += 1
                    speed, steps, threads = train_once(tmp / f"run{k}", args.steps, args.seconds,
                                                       old_threads if setting == "old" else None)
                    figures[situation][setting].append(speed)
                    ended[situation][setting].append(threads)
                    print(f"  {situation:14s} {setting}: {speed:7.1f} img/s over {steps} steps "
                          f"(ended with {threads} thread(s))", flush=True)

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    speed = {s: {k: mean(v) for k, v in d.items()} for s, d in figures.items()}
    of_alone = {setting: {s: speed[s][setting] / max(speed["alone"][setting], 1e-9)
                          for s in SITUATIONS if s != "alone"} for setting in ("old", "new")}
    new_over_old = {s: speed[s]["new"] / max(speed[s]["old"], 1e-9) for s in SITUATIONS}
    print(f"gru-attn from cached features, batch 64, {args.steps} steps or {args.seconds:.0f} s, "
          f"{args.rounds} round(s); old = {old_threads} fixed thread(s), new = adaptive; load average (1 min) at each situation shown")
    print(f"  {'situation':14s} {'old img/s':>10s} {'new img/s':>10s} {'new/old':>8s} {'load':>6s}")
    for s in SITUATIONS:
        print(f"  {s:14s} {speed[s]['old']:10.1f} {speed[s]['new']:10.1f} {new_over_old[s]:8.2f} {mean(load[s]):6.1f}")
    for setting in ("old", "new"):
        print(f"  {setting}: " + ", ".join(f"{s} = {r:.2f}x of alone" for s, r in of_alone[setting].items()))
    report("bench_threads", {
        "steps_at_most": args.steps, "seconds_at_most": args.seconds, "batch_size": 64, "rounds": args.rounds,
        "old_threads": old_threads, "nice": args.nice,
        "images_per_s": figures, "threads_at_end": ended, "load_avg_1m": load,
        "ratio_to_alone": of_alone, "new_over_old": new_over_old,
        "goal_beside_one_busy_at_least_0.6_of_alone": of_alone["new"]["beside 1 busy"] >= 0.6,
        "goal_alone_no_worse": new_over_old["alone"] >= 0.95,
        "note": "the machine is shared: 'alone' means no busy process of ours, not an idle machine; see load_avg_1m",
    })


if __name__ == "__main__":
    main()
