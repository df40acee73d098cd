"""`zoo compare --executor`: executors as plugins, the local executor's runs at once, the driver's ledger,
dependencies, failures, `--status`, and per-decoder `--set`. The Slurm executor against a real Slurm:
tests/test_slurm.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import zoo
from zoo.results.compare import CompareConfig, check, compare, plan
from zoo.results.database import ResultsDB
from zoo.results.sweep import LEDGER, status, status_table, sweep
from zoo.training.runs import training_hash


def tiny(decoders=("gru", "lstm"), seeds=(0, 1), steps=8, **more) -> CompareConfig:
    return CompareConfig(
        encoders=["resnet10t"], decoders=list(decoders), tokenizers=["word"], data="shapes",
        data_options={"num_train": 64, "num_val": 8, "num_test": 12, "image_size": 32}, seeds=list(seeds),
        train={"steps": steps}, metrics=("cider-d",), beam_size=2,
        overrides=["encoder.img_size=32", "encoder.freeze=true", "decoder.hidden_size=16", "decoder.embed_size=8",
                   "tokenizer.min_count=0", "train.batch_size=16", "train.progress=false", "train.eval_every=4",
                   "train.checkpoint_every=4"],
        **more,
    )


@pytest.fixture
def one_thread(monkeypatch):
    """Every process of the test (this one, the jobs) trains on one thread: CPU sums depend on the thread
    count, and the runs compared must be bit-identical."""
    monkeypatch.setenv("ZOO_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _weights(out: Path, name: str) -> dict[str, bytes]:
    """A run's final weights, tensor by tensor as bytes (the file's header holds times and ids that differ)."""
    from safetensors.torch import load_file

    return {k: v.numpy().tobytes() for k, v in load_file(str(out / name / "last.safetensors")).items()}


def _rows(db: Path) -> list:
    with ResultsDB(db) as rdb:
        return rdb.rows()


# -- the local executor ---------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.xdist_group("train")
def test_local_jobs_2_gives_the_sequential_results_and_a_rerun_adds_nothing(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("ZOO_FEATURE_CACHE", str(tmp_path / "cache"))
    cfg = tiny()
    compare(cfg, tmp_path / "seq", db_path=tmp_path / "seq.sqlite", progress=False, say=lambda m: None)
    said: list[str] = []
    summaries, states = sweep(cfg, tmp_path / "par", "local", {"jobs": 2}, db_path=tmp_path / "par.sqlite",
                              say=said.append, poll_s=0.2, live=False)
    names = [n for n, _ in plan(cfg)]
    assert [s["run"] for s in summaries] == names and {s.state for s in states.values()} == {"done"}
    for name in names:
        assert _weights(tmp_path / "seq", name) == _weights(tmp_path / "par", name), name  # bit-identical weights
    seq, par = _rows(tmp_path / "seq.sqlite"), _rows(tmp_path / "par.sqlite")
    assert sorted((r.run_name, r.metrics, r.per_image_cider, r.captions, r.config_hash) for r in seq) == \
        sorted((r.run_name, r.metrics, r.per_image_cider, r.captions, r.config_hash) for r in par)
    # two runs at once, each on its own CPUs (the threads module counts the affinity set)
    cpus = [json.loads((tmp_path / "par" / n / "job.log").read_text().splitlines()[0])["cpus"] for n in names]
    assert all(cpus) and all(set(a).isdisjoint(b) for a, b in zip(cpus[0::2], cpus[1::2])) if len(os.sched_getaffinity(0)) > 1 else True

    # the driver stopped after storing a row and before noting it (eval.json): a rerun finds the row again
    (tmp_path / "par" / names[0] / "eval.json").unlink()
    ledger = json.loads((tmp_path / "par" / LEDGER).read_text())
    summaries2, _ = sweep(cfg, tmp_path / "par", "local", {"jobs": 2}, db_path=tmp_path / "par.sqlite",
                          say=said.append, poll_s=0.2, live=False)
    assert len(_rows(tmp_path / "par.sqlite")) == len(names)  # no duplicate row
    assert [s["record_id"] for s in summaries2] == [s["record_id"] for s in summaries]
    assert json.loads((tmp_path / "par" / LEDGER).read_text())["submissions"] == ledger["submissions"]  # nothing resubmitted


def test_local_executor_divides_cpus_and_gives_each_run_its_gpus():
    from zoo_plugins.executors.local import LocalExecutor, cpu_slots

    assert cpu_slots([0, 1, 2, 3], 2) == [[0, 1], [2, 3]]
    assert cpu_slots([4, 5, 6, 7, 8], 3) == [[4, 5], [6, 7], [8]]
    assert cpu_slots([0, 1], 3) == [[0], [1], [0]]  # more runs than cores: one core each, shared
    task = zoo.Task(name="r", key="k#0", run_dir=Path("/tmp/r"), function=lambda: None,
                    command=[sys.executable, "-m", "zoo.results.job", "/tmp/out", "r"], log=Path("/tmp/r/job.log"))
    one = LocalExecutor(devices="0,1,2,3")
    assert one.capacity == 4
    argv, env, cpus = one.launch(task, 2)
    assert env["CUDA_VISIBLE_DEVICES"] == "2" and argv == task.command and cpus is None
    two = LocalExecutor(devices="0,1,2,3,4", gpus_per_run=2)  # GPU 4 alone is too few for a run
    assert two.capacity == 2
    argv, env, _ = two.launch(task, 1)
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert argv[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert argv[5:] == task.command[1:]
    assert LocalExecutor(devices="0,1,2,3", jobs=1).capacity == 1
    with pytest.raises(zoo.ZooError, match="gpus_per_run=3: only 2 GPU"):
        LocalExecutor(devices="0,1", gpus_per_run=3)
    cpu = LocalExecutor(devices="cpu", jobs=2)
    assert cpu.capacity == 2 and cpu.launch(task, 0)[2] is not None


def test_a_job_submitted_before_a_crash_is_found_not_submitted_again(tmp_path, monkeypatch):
    """The driver writes a job's key before submitting and its id after; a driver killed in between left
    only the key: the next one finds the job by it (here a process carrying the key) and adopts it."""
    cfg = tiny(decoders=["gru"], seeds=[0])
    out = tmp_path / "cmp"
    out.mkdir()
    from zoo.results.compare import _settings_json

    (out / "compare.json").write_text(_settings_json(cfg))
    name = plan(cfg)[0][0]
    key = "zoo-test-1#0"
    (out / LEDGER).write_text(json.dumps({"executor": {"name": "local", "options": {}}, "submissions": 1,
                                          "runs": {name: {"key": key, "job_id": None, "state": "submitting"}}}))
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--key", key])
    for _ in range(100):  # until the new process shows its own command line
        if key.encode() in Path(f"/proc/{job.pid}/cmdline").read_bytes():
            break
        time.sleep(0.05)
    try:
        states, _ = status(out)
        assert states[name].state == "running" and states[name].job_id.startswith(f"{job.pid}:")
        assert json.loads((out / LEDGER).read_text())["runs"][name]["job_id"] == states[name].job_id
    finally:
        job.kill()
        job.wait()
    states, _ = status(out)
    assert states[name].state == "failed" and "without writing its evaluation" in states[name].error


# -- a plugin executor, dependencies and failures ---------------------------------------------------------------
INLINE = textwrap.dedent('''
    """A test executor: each job runs in this process, at once; ``fail`` names a run whose job dies."""
    from pathlib import Path

    import zoo


    class InlineExecutor(zoo.Executor):
        """Runs each job in this process when submitted."""

        order = []

        def __init__(self, fail: str = ""):
            self.fail, self.done = fail, {}

        def submit(self, tasks, folder):
            ids = []
            for task in tasks:
                InlineExecutor.order.append(task.name)
                job_id = f"inline-{len(InlineExecutor.order)}"
                task.log.parent.mkdir(parents=True, exist_ok=True)
                if task.name == self.fail:
                    task.log.write_text("loading\\nSegmentation fault (core dumped)\\n")
                    self.done[job_id] = zoo.JobState.FAILED
                else:
                    task.function()
                    self.done[job_id] = zoo.JobState.DONE
                ids.append(job_id)
            return ids

        def states(self, job_ids, folder):
            return {i: self.done[i] for i in job_ids if i in self.done}


    @zoo.hookimpl
    def zoo_register(registry):
        registry.add_executor("inline", InlineExecutor)
''')


@pytest.mark.slow
@pytest.mark.xdist_group("train")
def test_plugin_executor_dependencies_failures_and_status(tmp_path, monkeypatch, capsys, fresh_registry):
    from zoo.cli import main as zoo_main

    monkeypatch.setenv("ZOO_FEATURE_CACHE", str(tmp_path / "cache"))
    plugin = tmp_path / "inline_executor.py"
    plugin.write_text(INLINE)
    out, db = tmp_path / "cmp", tmp_path / "r.sqlite"
    args = ["--plugin", str(plugin), "compare", "--encoder", "resnet10t", "--decoder", "gru,lstm", "--steps", "4",
            "--objective", "xe,scst", "--objective-set", "train.steps=2", "--objective-set", "objective.sample_n=2",
            "--metrics", "cider-d", "--beam", "1", "--no-progress", "--out", str(out), "--db", str(db),
            "--executor", "inline", "--executor-set", "fail=resnet10t-lstm-word-seed0",
            *sum((["--set", s] for s in tiny().overrides), []),
            *sum((["--set", f"data.{k}={v}"] for k, v in tiny().data_options.items()), [])]
    rc = zoo_main(args)
    captured = capsys.readouterr()
    text = captured.out
    assert rc == 1, text + captured.err
    InlineExecutor = zoo.get_registry().get("executor", "inline").factory  # noqa: N806 - the plugin's class

    # the SCST run was submitted after its XE run finished; the failed XE run's SCST run never was
    assert InlineExecutor.order == ["resnet10t-gru-word-seed0", "resnet10t-lstm-word-seed0",
                                    "resnet10t-gru-word-seed0-scst"]
    assert f"resnet10t-lstm-word-seed0: FAILED (job inline-2); run folder {out / 'resnet10t-lstm-word-seed0'}" in text
    assert "| Segmentation fault (core dumped)" in text  # the end of its log
    assert "resnet10t-lstm-word-seed0-scst: blocked, its starting point resnet10t-lstm-word-seed0 failed" in text
    assert "resnet10t+gru+word" in text  # the leaderboard of what finished
    assert ("not on the leaderboard: resnet10t-lstm-word-seed0 (failed); resnet10t-lstm-word-seed0-scst (blocked)"
            in text)
    assert sorted(r.run_name for r in _rows(db)) == ["resnet10t-gru-word-seed0", "resnet10t-gru-word-seed0-scst"]

    assert zoo_main(["compare", "--status", str(out)]) == 0  # (the plugin is loaded in this process already)
    shown = capsys.readouterr().out
    assert shown.splitlines()[0] == "done 2  failed 1  blocked 1"
    assert any(line.split()[:3] == ["resnet10t-lstm-word-seed0", "failed", "inline-2"] for line in shown.splitlines())


def test_unknown_executor_and_option_are_named(tmp_path):
    with pytest.raises(zoo.ZooError, match=r"unknown executor 'slrum'.*Did you mean: slurm"):
        sweep(tiny(), tmp_path / "x", "slrum", {})
    with pytest.raises(zoo.ZooError, match=r"unknown option slurm.partiton; did you mean partition\?"):
        sweep(tiny(), tmp_path / "x", "slurm", {"partiton": "gpu"})
    assert not (tmp_path / "x").exists()


# -- per-decoder options ----------------------------------------------------------------------------------------
def test_a_compare_sets_an_option_for_one_decoder_only():
    cfg = tiny(decoders=["gru", "gru-attn"], seeds=[0])
    cfg.overrides = cfg.overrides + ["gru-attn.attention_size=24"]
    runs = dict(plan(cfg))
    assert "attention_size" not in runs["resnet10t-gru-word-seed0"].decoder_kwargs
    assert runs["resnet10t-gru-attn-word-seed0"].decoder_kwargs["attention_size"] == 24
    check(cfg, list(runs.items()))  # gru does not take it, and is not given it
    plain = tiny(decoders=["gru", "gru-attn"], seeds=[0])
    # part of the system's identity: another training hash, so another row on the leaderboard
    assert training_hash(runs["resnet10t-gru-attn-word-seed0"]) != training_hash(dict(plan(plain))["resnet10t-gru-attn-word-seed0"])
    assert training_hash(runs["resnet10t-gru-word-seed0"]) == training_hash(dict(plan(plain))["resnet10t-gru-word-seed0"])

    bad = tiny(decoders=["gru", "gru-attn"], seeds=[0])
    bad.overrides = bad.overrides + ["gru-attn.attention_sise=24"]
    with pytest.raises(zoo.ZooError, match=r"unknown option decoder.attention_sise; did you mean attention_size\?"):
        check(bad, plan(bad))
    shared = tiny(decoders=["gru", "gru-attn"], seeds=[0])
    shared.overrides = shared.overrides + ["decoder.attention_size=24"]
    with pytest.raises(zoo.ZooError, match=r"decoder 'gru' takes.*--set gru-attn.attention_size=VALUE"):
        check(shared, plan(shared))
    absent = tiny(decoders=["gru"], seeds=[0])
    absent.overrides = ["lstm.hidden_size=8"]
    with pytest.raises(zoo.ZooError, match=r"decoder 'lstm' is not in this compare \(--decoder gru\)"):
        plan(absent)
    typo = tiny(decoders=["gru"], seeds=[0])
    typo.overrides = ["trian.lr=1"]
    with pytest.raises(zoo.ZooError, match=r"'trian' is neither a section .* nor a decoder of this compare"):
        plan(typo)


def test_status_of_a_folder_that_is_no_compare(tmp_path, capsys):
    from zoo.cli import main as zoo_main

    assert zoo_main(["compare", "--status", str(tmp_path)]) == 2
    assert "holds no compare (no compare.json)" in capsys.readouterr().err


def test_status_table_lists_every_run():
    from zoo.results.sweep import RunState

    table = status_table({"a": RunState("a", "running", "12_0", 0.4567, 40), "b": RunState("b", "queued", "12_1")})
    lines = table.splitlines()
    assert lines[0] == "queued 1  running 1"
    assert lines[2].split() == ["a", "running", "12_0", "40", "45.7"]
    assert lines[3].split() == ["b", "queued", "12_1", "-", "-"]


@pytest.mark.slow
@pytest.mark.xdist_group("train")
def test_a_stop_request_saves_the_state_at_the_next_step_and_the_run_resumes_bit_identical(tmp_path, monkeypatch):
    """What a job does on SIGTERM (scancel) or SIGUSR2 (time limit, preemption): its handler only asks
    (``zoo.request_stop``); the loop stops after the step it is in, the guard saves that step's state."""
    from zoo.contracts.executor import StopRequested, clear_stop
    from zoo.training.run_guard import RunFailed
    from zoo.training.runs import execute
    from zoo.training.state import saved_step

    monkeypatch.setenv("ZOO_FEATURE_CACHE", str(tmp_path / "cache"))
    spec = plan(tiny(decoders=["gru"], seeds=[0]))[0][1]
    execute(spec, tmp_path / "whole", progress=False)
    zoo.request_stop("preempted (test)")
    try:
        with pytest.raises(RunFailed, match=r"stopped at step 1 of 8: stopped on request \(preempted \(test\)\)") as info:
            execute(spec, tmp_path / "stopped", progress=False)
    finally:
        clear_stop()
    assert isinstance(info.value.__cause__, StopRequested)
    assert saved_step(tmp_path / "stopped" / "state.safetensors") == 1  # the step it was in, saved
    execute(spec, tmp_path / "stopped", resume=True, progress=False)
    assert _weights(tmp_path / "whole", "") == _weights(tmp_path / "stopped", "")


def test_a_folder_changes_executor_only_when_no_job_of_the_old_one_runs(tmp_path):
    from zoo.results.compare import _settings_json
    from zoo.results.sweep import _check_executor_switch

    out = tmp_path / "cmp"
    out.mkdir()
    (out / "compare.json").write_text(_settings_json(tiny()))
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for _ in range(100):
            if b"sleep(60)" in Path(f"/proc/{job.pid}/cmdline").read_bytes():
                break
            time.sleep(0.05)
        start = Path(f"/proc/{job.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        (out / LEDGER).write_text(json.dumps({"executor": {"name": "local", "options": {}}, "submissions": 1,
                                              "runs": {"r": {"key": "k#0", "job_id": f"{job.pid}:{start}:0"}}}))
        with pytest.raises(zoo.ZooError, match=r"jobs submitted through executor 'local' still run .* before using 'slurm'"):
            _check_executor_switch(out, "slurm")
        _check_executor_switch(out, "local")  # the same executor reattaches
    finally:
        job.kill()
        job.wait()
    _check_executor_switch(out, "slurm")  # nothing runs any more: fine


@pytest.mark.slow
@pytest.mark.xdist_group("train")
def test_ctrl_c_in_the_terminal_leaves_local_jobs_running_and_the_same_command_reattaches(tmp_path):
    """Ctrl-C reaches every process of the terminal's foreground group: the driver's, not the jobs (each
    in a session of its own). The same command watches the running job instead of starting another."""
    import signal

    out = tmp_path / "cmp"
    args = [sys.executable, "-m", "zoo", "compare", "--encoder", "resnet10t", "--decoder", "gru", "--steps", "150",
            "--metrics", "cider-d", "--beam", "1", "--no-progress", "--out", str(out), "--db", str(tmp_path / "r.sqlite"),
            "--executor", "local", *sum((["--set", s] for s in tiny().overrides), []),
            *sum((["--set", f"data.{k}={v}"] for k, v in tiny().data_options.items()), [])]
    env = {**os.environ, "ZOO_FEATURE_CACHE": str(tmp_path / "cache"), "ZOO_NUM_THREADS": "1"}
    run = out / "resnet10t-gru-word-seed0"

    def step() -> int:
        try:
            return max([json.loads(x).get("step", 0) for x in (run / "log.jsonl").read_text().splitlines()] or [0])
        except (OSError, ValueError):
            return 0

    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    for _ in range(1200):
        if step() >= 4 or driver.poll() is not None:
            break
        time.sleep(0.1)
    os.killpg(driver.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    assert driver.wait(60) == 130, (tmp_path / "first.log").read_text()
    job_id = json.loads((out / LEDGER).read_text())["runs"][run.name]["job_id"]
    pid = int(job_id.split(":")[0])
    assert Path(f"/proc/{pid}").exists()  # the job goes on
    assert "keep running" in (tmp_path / "first.log").read_text()

    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "[1/1]" not in second.stdout and f"(job {job_id})" in second.stdout  # watched, not started again
    ledger = json.loads((out / LEDGER).read_text())
    assert ledger["submissions"] == 1 and ledger["runs"][run.name]["job_id"] == job_id
    assert (run / "eval.json").exists() and len(_rows(tmp_path / "r.sqlite")) == 1


def test_the_live_view_redraws_its_table_on_a_terminal_and_prints_changes_elsewhere():
    from zoo.results.sweep import LiveView, RunState

    said: list[str] = []
    view = LiveView(said.append, live=True)
    view.show({"a": RunState("a", "running", "7")})
    view.show({"a": RunState("a", "running", "7")})
    assert not said[0].startswith("\x1b") and said[1].startswith("\x1b[3F\x1b[J")  # up 3 lines, erase, redraw
    view.note("a: FAILED")
    view.show({"a": RunState("a", "failed", "7")})
    assert not said[3].startswith("\x1b")  # the failure stays on screen
    said.clear()
    plain = LiveView(said.append, live=False)  # a log file: one line per change, no escape codes
    for state in ("queued", "queued", "running", "done"):
        plain.show({"a": RunState("a", state, "7", 0.5)})
    assert said == ["a: queued (job 7), last val CIDEr-D 50.0", "a: running (job 7), last val CIDEr-D 50.0",
                    "a: done (job 7), last val CIDEr-D 50.0"]


def test_executors_are_listed_and_described_like_every_other_kind(capsys):
    from zoo.cli import main as zoo_main

    assert zoo_main(["list", "executors"]) == 0
    assert capsys.readouterr().out.split() == ["local", "slurm"]
    assert zoo_main(["info", "slurm"]) == 0
    shown = capsys.readouterr().out
    assert "plugin: slurm-executor" in shown and "partition = None" in shown and "gpus_per_run = 0" in shown
    assert zoo_main(["info", "local", "--kind", "executor"]) == 0
    assert "jobs = None" in capsys.readouterr().out


def test_the_live_view_reads_a_runs_last_validation_from_its_log(tmp_path):
    """Step and CIDEr-D of the last validation, from a log still being written (a torn last line)."""
    from zoo.results.sweep import last_validation

    run = tmp_path / "run"
    assert last_validation(run) == (None, None)  # no log yet
    run.mkdir()
    lines = [{"step": 1, "loss": 3.0}, {"step": 2, "val_cider_d": 0.4}, {"step": 3, "loss": 2.0},
             {"step": 4, "val_cider_d": 0.7}, {"step": 5, "loss": 1.5}]
    (run / "log.jsonl").write_text("\n".join(json.dumps(e) for e in lines) + '\n{"step": 6, "lo')
    assert last_validation(run) == (5, 0.7)
