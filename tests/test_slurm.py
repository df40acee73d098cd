"""`zoo compare --executor slurm` against a real Slurm (sbatch through submitit): the same weights and rows
as the sequential compare, a cancelled job finished by the same command, a job longer than its time limit
finished through requeue, and a driver stopped with Ctrl-C that reattaches without submitting twice.

Needs a running Slurm: `apt-get install slurm-wlm munge`, then `.ci/slurm-up.sh` as root (a one-node
cluster on this machine). Skips otherwise; `.ci/run` sets ZOO_REQUIRE_SLURM=1, where a skip is a failure.
The runs are tiny, every process trains on one thread (CPU sums depend on the thread count), and the tests
share one xdist group so that they do not wait for each other's jobs on the one node.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo.cli import main as zoo_main
from zoo.results.database import ResultsDB
from zoo.results.sweep import LEDGER

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.xdist_group("slurm")]

RUN = "resnet10t-gru-word-seed0"
TINY = ["--encoder", "resnet10t", "--metrics", "cider-d", "--beam", "2", "--no-progress",
        "--set", "data.num_train=64", "--set", "data.num_val=8", "--set", "data.num_test=12",
        "--set", "data.image_size=32", "--set", "encoder.img_size=32", "--set", "encoder.freeze=true",
        "--set", "decoder.hidden_size=16", "--set", "decoder.embed_size=8", "--set", "tokenizer.min_count=0",
        "--set", "train.batch_size=16"]
#: one run long enough to be interrupted (a few seconds of training), saving its state every 10 steps
LONG = [*TINY, "--decoder", "gru", "--steps", "400", "--set", "train.eval_every=200",
        "--set", "train.checkpoint_every=10"]


def _slurm_missing() -> str | None:
    missing = [b for b in ("sbatch", "squeue", "scancel", "scontrol", "sinfo") if not shutil.which(b)]
    if missing:
        return f"no Slurm here ({', '.join(missing)} missing): apt-get install slurm-wlm munge, then .ci/slurm-up.sh as root"
    try:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed ({exc}): start the cluster with .ci/slurm-up.sh as root"
    if not any(s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in state):
        return f"Slurm has no usable node (sinfo: {' '.join(state) or 'nothing'}): start it with .ci/slurm-up.sh as root"
    return None


@pytest.fixture(scope="module")
def slurm():
    why = _slurm_missing()
    if why:
        if os.environ.get("ZOO_REQUIRE_SLURM") == "1":
            pytest.fail(f"ZOO_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def env(tmp_path_factory, slurm):
    """One thread per process, a feature cache of the module's own; sbatch passes the environment on."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ZOO_NUM_THREADS", "1")
    mp.setenv("ZOO_FEATURE_CACHE", str(tmp_path_factory.mktemp("features")))
    mp.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    mp.undo()


@pytest.fixture(scope="module")
def long_reference(env, tmp_path_factory):
    """The LONG run trained without interruption, one process, in sequence."""
    out = tmp_path_factory.mktemp("reference")
    assert zoo_main(["compare", *LONG, "--out", str(out / "cmp"), "--db", str(out / "r.sqlite")]) == 0
    return out / "cmp"


def _weights(out: Path, name: str) -> dict[str, bytes]:
    from safetensors.torch import load_file

    return {k: v.numpy().tobytes() for k, v in load_file(str(out / name / "last.safetensors")).items()}


def _rows(db: Path) -> list:
    with ResultsDB(db) as rdb:
        return rdb.rows()


def _ledger(out: Path) -> dict:
    return json.loads((out / LEDGER).read_text())


def _wait(what, condition, driver: subprocess.Popen | None = None, timeout: float = 120.0, every: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if driver is not None and driver.poll() is not None:
            raise AssertionError(f"the driver ended (exit {driver.returncode}) while waiting for {what}")
        time.sleep(every)
    raise AssertionError(f"waited {timeout:.0f} s for {what}")


def _step(out: Path, name: str) -> int:
    try:
        lines = (out / name / "log.jsonl").read_text().splitlines()
    except OSError:
        return 0
    return max([json.loads(x).get("step", 0) for x in lines if x.strip()] or [0])


def _squeue(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-r", "-o", "%T", "-j", job_id.split("_")[0]], capture_output=True,
                          text=True).stdout.strip()


def _driver(args: list[str], log: Path) -> subprocess.Popen:
    """``zoo compare`` in its own process (as a user's terminal would run it), output into ``log``."""
    return subprocess.Popen([sys.executable, "-m", "zoo", "compare", *args], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)


def test_a_sweep_through_slurm_gives_the_sequential_weights_and_rows(env, tmp_path):
    args = [*TINY, "--decoder", "gru,lstm", "--seeds", "0,1", "--steps", "8", "--set", "train.eval_every=4"]
    assert zoo_main(["compare", *args, "--out", str(tmp_path / "seq"), "--db", str(tmp_path / "seq.sqlite")]) == 0
    assert zoo_main(["compare", *args, "--out", str(tmp_path / "slurm"), "--db", str(tmp_path / "slurm.sqlite"),
                     "--executor", "slurm", "--executor-set", "time=5"]) == 0
    names = sorted(p.name for p in (tmp_path / "seq").iterdir() if p.is_dir())
    assert len(names) == 4
    for name in names:
        assert _weights(tmp_path / "seq", name) == _weights(tmp_path / "slurm", name), name
    fields = lambda r: (r.run_name, r.system, r.metrics, r.per_image_cider, r.captions, r.config_hash, r.seed)  # noqa: E731
    assert sorted(map(fields, _rows(tmp_path / "seq.sqlite"))) == sorted(map(fields, _rows(tmp_path / "slurm.sqlite")))
    ledger = _ledger(tmp_path / "slurm")
    assert ledger["submissions"] == 1 and len({e["job_id"].split("_")[0] for e in ledger["runs"].values()}) == 1  # one array


def test_ctrl_c_reattach_then_scancel_and_the_same_command_finishes_bit_identical(env, long_reference, tmp_path):
    out = tmp_path / "cmp"
    args = [*LONG, "--out", str(out), "--db", str(tmp_path / "r.sqlite"), "--executor", "slurm",
            "--executor-set", "time=5"]
    first = _driver(args, tmp_path / "first.log")
    job_id = _wait("the job to be submitted", lambda: (out / LEDGER).exists() and _ledger(out)["runs"][RUN]["job_id"], first)
    _wait("training to start", lambda: _step(out, RUN) >= 20, first)
    first.send_signal(signal.SIGINT)  # Ctrl-C in the terminal: the driver stops, the job goes on
    assert first.wait(60) == 130
    said = (tmp_path / "first.log").read_text()
    assert "keep running" in said and f"zoo compare --status {out}" in said
    assert _squeue(job_id) in ("RUNNING", "PENDING")

    second = _driver(args, tmp_path / "second.log")  # the same command reattaches
    _wait("the driver to reattach", lambda: f"running (job {job_id})" in (tmp_path / "second.log").read_text(), second)
    assert _ledger(out)["submissions"] == 1  # nothing submitted again
    subprocess.run(["scancel", job_id], check=True)  # cancelled: in training it saves its state and ends
    assert second.wait(120) == 1
    said = (tmp_path / "second.log").read_text()
    assert f"{RUN}: FAILED (job {job_id}); run folder {out / RUN}" in said  # reported, not resubmitted
    assert "not on the leaderboard" in said
    assert _ledger(out)["submissions"] == 1

    third = _driver(args, tmp_path / "third.log")  # again: submitted once more, continues from the saved state
    assert third.wait(180) == 0, (tmp_path / "third.log").read_text()
    assert _ledger(out)["submissions"] == 2 and _ledger(out)["runs"][RUN]["attempt"] == 2
    assert _weights(out, RUN) == _weights(long_reference, RUN)
    assert len(_rows(tmp_path / "r.sqlite")) == 1


def test_a_job_warned_of_its_time_limit_saves_requeues_and_finishes_bit_identical(env, long_reference, tmp_path):
    """A two-minute limit, the warning (SIGUSR2) due 60 s before it: the job saves its state at the next
    step, is requeued by submitit, and continues; the driver releases the requeued job at once
    (requeue_at_once). Slurm checks time limits on a tick of its own (up to ~30 s late), so the test sends
    the very warning Slurm sends (``scancel --signal=USR2``, also what a preemption with --signal delivers)
    once training runs, rather than wait for that tick; whichever comes first, the run must end the same."""
    out = tmp_path / "cmp"
    args = [*LONG, "--out", str(out), "--db", str(tmp_path / "r.sqlite"), "--executor", "slurm",
            "--executor-set", "time=2", "--executor-set", "signal_delay_s=60",
            "--executor-set", "max_requeue=10", "--executor-set", "requeue_at_once=true"]
    driver = _driver(args, tmp_path / "driver.log")
    job_id = _wait("the job to be submitted", lambda: (out / LEDGER).exists() and _ledger(out)["runs"][RUN]["job_id"], driver)
    _wait("training to start", lambda: _step(out, RUN) >= 20, driver)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    assert driver.wait(180) == 0, (tmp_path / "driver.log").read_text()
    log = (out / "slurm" / f"{job_id}_0_log.out").read_text()
    assert "stopped on request (preempted or out of time (SIGUSR2))" in log, log  # saved at a step boundary
    assert "Requeued job" in log
    assert _ledger(out)["submissions"] == 1  # requeued by Slurm, not submitted again
    assert _weights(out, RUN) == _weights(long_reference, RUN)


def test_an_scst_run_waits_in_the_queue_for_its_xe_run(env, tmp_path):
    """With Slurm the SCST run is submitted at once, depending on its XE job (afterok), so the sweep goes on
    without the driver; it starts from the XE run's best checkpoint when that job has succeeded."""
    out = tmp_path / "cmp"
    assert zoo_main(["compare", *TINY, "--decoder", "gru", "--steps", "8", "--objective", "xe,scst",
                     "--objective-set", "train.steps=2", "--objective-set", "objective.sample_n=2",
                     "--out", str(out), "--db", str(tmp_path / "r.sqlite"), "--executor", "slurm",
                     "--executor-set", "time=5"]) == 0
    ledger = _ledger(out)
    xe, scst = ledger["runs"][RUN], ledger["runs"][f"{RUN}-scst"]
    # submitted while its XE run was still to be trained, not after it
    assert scst["submitted_at"] < (out / RUN / "evaluation.json").stat().st_mtime
    script = (out / "slurm" / f"{scst['job_id']}_submission.sh").read_text()
    assert f"--dependency=afterok:{xe['job_id']}" in script and "--kill-on-invalid-dep=yes" in script
    assert sorted(r.run_name for r in _rows(tmp_path / "r.sqlite")) == [RUN, f"{RUN}-scst"]
