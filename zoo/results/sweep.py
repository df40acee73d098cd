"""The sweep driver: ``zoo compare --executor NAME`` hands each run to an executor as a job and watches.

What it keeps in the compare folder:

- ``jobs.json``, the ledger: per run, the executor, the job id and the submission's unique key. An entry is
  written *before* its job is submitted (state ``submitting``, with the key) and completed with the id
  after; a driver that died in between asks the executor for the job by its key (:meth:`Executor.find`)
  instead of submitting again. So the same command, run again, reattaches: runs with a live job are
  watched, never submitted twice.
- each run's folder: the job writes ``evaluation.json`` (the database row to be) or ``failed.json``; the
  driver, the database's only writer, stores the row (once, see :func:`zoo.results.compare.record_run`) and
  writes ``eval.json``. A sweep interrupted anywhere and run again ends with the same rows.

Dependencies: a run that starts from another's checkpoint (SCST from its XE run) is submitted when that
run is done, or, with an executor that can make a job wait (``Executor.dependencies``: Slurm's
``afterok``), as soon as that run's job is queued; when it failed, the dependent run is reported
``blocked`` (a dependent job still waiting is cancelled), never left waiting.

Within one invocation a failed job is reported (run folder, error, end of its log) and not retried; the
others go on. Run the command again to retry it: it resumes from its last saved training state.

Ctrl-C (or a lost terminal) stops the driver only; the jobs go on. ``zoo compare --status DIR`` shows
where a sweep stands without submitting anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from zoo.contracts.executor import Executor, JobState, Task
from zoo.errors import ZooError
from zoo.files import atomic_write
from zoo.registry.manager import get_registry
from zoo.registry.recipes import check_kwargs
from zoo.results.compare import EVALUATION, CompareConfig, _check_reuse, _settings_json, check, plan, record_run
from zoo.results.job import FAILED, load_config, run_job
from zoo.training.runs import RunSpec
from zoo.views.curves import read_log

LEDGER = "jobs.json"
#: the states of the live view, in the order their counts are shown
STATES = ("waiting", "queued", "running", "done", "failed", "blocked")


@dataclass
class RunState:
    """One run as the driver sees it."""

    name: str
    state: str = "waiting"
    job_id: str | None = None
    val_cider: float | None = None
    step: int | None = None
    error: str | None = None
    log: str | None = None
    after: str | None = None  # the run it starts from
    live: bool = False  # its job is queued or running (it may have written its evaluation and be exiting)


def make_executor(name: str, options: dict[str, Any]) -> Executor:
    """The registered executor ``name`` built with ``options`` (checked against its own options: an
    unknown name or option is refused, naming the close ones)."""
    entry = get_registry().get("executor", name)
    check_kwargs("--executor-set", name, entry, options, ZooError, prefix=name)
    executor = entry.factory(**options)
    if not isinstance(executor, Executor):
        raise ZooError(f"executor {name!r} ({entry.module}) is not a zoo.Executor subclass; see docs/cluster.md")
    return executor


def parse_settings(assignments: list[str]) -> dict[str, Any]:
    """``--executor-set KEY=VALUE`` as a mapping (values parsed as YAML scalars, lists and mappings)."""
    out: dict[str, Any] = {}
    for a in assignments:
        key, sep, raw = a.partition("=")
        if not sep or not key.strip():
            raise ZooError(f"--executor-set {a!r}: expected KEY=VALUE, e.g. partition=gpu or time=120")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ZooError(f"--executor-set {a!r}: cannot parse {raw!r}: {exc}") from exc
    return out


# -- the ledger -------------------------------------------------------------------------------------------
def read_ledger(out: Path) -> dict[str, Any]:
    path = out / LEDGER
    if not path.exists():
        return {"executor": None, "runs": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ZooError(f"{path} is not valid JSON ({exc}); it lists the sweep's jobs: check them with squeue "
                       "before deleting it, or the runs may be submitted twice") from exc


def write_ledger(out: Path, ledger: dict[str, Any]) -> None:
    atomic_write(out / LEDGER, lambda tmp: Path(tmp).write_text(json.dumps(ledger, indent=1, sort_keys=True)))


@contextlib.contextmanager
def driving(out: Path) -> Iterator[None]:
    """One driver per compare folder: a second one (another terminal) is refused instead of submitting the
    same runs again."""
    out.mkdir(parents=True, exist_ok=True)
    fh = open(out / ".driver.lock", "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ZooError(f"another `zoo compare` is driving {out} right now; watch it with "
                           f"`zoo compare --status {out}`, or stop that one first") from None
        yield
    finally:
        fh.close()


# -- what a run folder says -------------------------------------------------------------------------------
def last_validation(run_dir: Path) -> tuple[int | None, float | None]:
    """The step and CIDEr-D of the run's last validation (its ``log.jsonl``, read as the curves read it);
    (None, None) while there is no log, or one that cannot be read."""
    try:
        entries = read_log(run_dir)
    except (ZooError, OSError):
        return None, None
    scores = [e["val_cider_d"] for e in entries if e.get("val_cider_d") is not None]
    return (entries[-1]["step"] if entries else None), (scores[-1] if scores else None)


def log_tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return "(no log)"
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text[-lines:])


def _failure_text(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / FAILED).read_text()).get("error")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


# -- the driver -----------------------------------------------------------------------------------------------
class Sweep:
    """The runs of one compare folder, their jobs, and what has been said about them."""

    def __init__(self, cfg: CompareConfig, out: Path, executor: Executor, executor_name: str,
                 executor_options: dict[str, Any], db_path: str | Path | None, plugins: tuple[str, ...] = ()) -> None:
        self.cfg, self.out, self.executor, self.db_path, self.plugins = cfg, out, executor, db_path, plugins
        self.runs: list[tuple[str, RunSpec]] = plan(cfg)
        self.after = {name: spec.init["run"] for name, spec in self.runs if spec.init and "run" in spec.init}
        self.ledger = read_ledger(out)
        self.ledger["executor"] = {"name": executor_name, "options": executor_options}
        self.tag = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:8]
        self.tried: set[str] = set()  # submitted or watched by this driver: a failure is final for this invocation
        self.reported: set[str] = set()

    def task(self, name: str, key: str) -> Task:
        run_dir = self.out / name
        command = [sys.executable, "-m", "zoo.results.job", str(self.out.resolve()), name, "--key", key]
        for plugin in self.plugins:
            command += ["--plugin", plugin]
        return Task(name=name, key=key, run_dir=run_dir,
                    function=functools.partial(run_job, str(self.out.resolve()), name, self.plugins),
                    command=command, log=run_dir / "job.log")

    def assess(self) -> dict[str, RunState]:
        """Every run's state from its folder, the ledger and the executor (adopting a job submitted by a
        driver that died before writing its id down)."""
        entries: dict[str, Any] = self.ledger["runs"]
        for name, entry in entries.items():
            if entry.get("job_id") is None and entry.get("key"):
                found = self.executor.find(entry["key"], self.out)
                if found is not None:
                    entry["job_id"] = found
                    write_ledger(self.out, self.ledger)
        ids = [e["job_id"] for e in entries.values() if e.get("job_id")]
        live = self.executor.states(ids, self.out) if ids else {}
        states: dict[str, RunState] = {}
        for name, _ in self.runs:
            run_dir = self.out / name
            entry = entries.get(name, {})
            rs = RunState(name, job_id=entry.get("job_id"), after=self.after.get(name))
            rs.step, rs.val_cider = last_validation(run_dir)
            job_state = live.get(rs.job_id) if rs.job_id else None
            rs.live = job_state in (JobState.QUEUED, JobState.RUNNING)
            if rs.live:  # watched by this driver (submitted by it or found running): a failure now is final
                self.tried.add(name)
            if (run_dir / "eval.json").exists() or (run_dir / EVALUATION).exists():
                rs.state = "done"
            elif job_state in (JobState.QUEUED, JobState.RUNNING):
                rs.state = job_state.value
            elif entry and not entry.get("job_id") and not (run_dir / FAILED).exists():
                rs.state = "waiting"  # the driver stopped while submitting it, and no job of it is known
            elif entry:  # submitted, and its job is over without an evaluation
                rs.state = "failed"
                rs.error = _failure_text(run_dir) or (
                    "the job ended without writing its evaluation or an error (cancelled, killed, out of memory, "
                    "or the node failed)")
                rs.log = str(self.executor.log_path(rs.job_id or "", self.task(name, entry.get("key", "")), self.out))
            states[name] = rs
        for name, rs in states.items():  # a run whose starting point failed for good cannot start
            start = states.get(rs.after) if rs.after else None
            if start is not None and rs.state in ("waiting", "failed", "queued") and (
                    start.state == "blocked" or (start.state == "failed" and start.name in self.tried)):
                if rs.live and rs.job_id:  # waiting in the queue for a job that failed: it would wait forever
                    self.executor.cancel([rs.job_id], self.out)
                    rs.live = False
                rs.state, rs.error = "blocked", f"its starting point {rs.after} failed"
        return states

    def ready(self, states: dict[str, RunState]) -> list[str]:
        """Runs to submit now: not done, no live job, not failed in this invocation, and their starting
        point done; at most as many as the executor has room for."""
        inflight = sum(1 for rs in states.values() if rs.live)
        room = None if self.executor.capacity is None else max(self.executor.capacity - inflight, 0)
        out = []
        for name, rs in states.items():
            if rs.state not in ("waiting", "failed") or name in self.tried:
                continue
            start = states.get(rs.after) if rs.after else None
            if start is not None and start.state != "done" and not (self.executor.dependencies and start.live):
                continue  # its starting point is not done (nor queued where the executor can wait for it)
            out.append(name)
        return out if room is None else out[:room]

    def submit(self, names: list[str], states: dict[str, RunState] | None = None) -> None:
        if not names:
            return
        states = states or {}
        attempt = self.ledger.setdefault("submissions", 0) + 1
        self.ledger["submissions"] = attempt
        batch = f"zoo-{self.tag}-{attempt}"
        tasks = []
        for i, name in enumerate(names):
            key = f"{batch}#{i}"
            old = self.ledger["runs"].get(name, {})
            self.ledger["runs"][name] = {"key": key, "job_id": None, "state": "submitting",
                                         "attempt": old.get("attempt", 0) + 1, "submitted_at": time.time()}
            (self.out / name).mkdir(parents=True, exist_ok=True)
            (self.out / name / FAILED).unlink(missing_ok=True)
            task = self.task(name, key)
            start = states.get(self.after.get(name, ""))
            if start is not None and start.state != "done" and start.job_id:
                task.after = [start.job_id]  # the executor waits for it (Slurm: afterok)
            tasks.append(task)
            self.tried.add(name)
        write_ledger(self.out, self.ledger)  # before submitting: a crash after sbatch is found again by key
        ids = self.executor.submit(tasks, self.out)
        for name, job_id in zip(names, ids):
            self.ledger["runs"][name].update(job_id=job_id, state="submitted")
        write_ledger(self.out, self.ledger)

    def record_finished(self, states: dict[str, RunState]) -> list[dict[str, Any]]:
        """Store each evaluated run's row (the driver is the database's one writer); summaries in plan order."""
        summaries = []
        for name, _ in self.runs:
            if states[name].state == "done":
                summaries.append(record_run(self.out, name, self.db_path))
        return summaries


def sweep(cfg: CompareConfig, out_dir: str | Path, executor_name: str, executor_options: dict[str, Any] | None = None,
          db_path: str | Path | None = None, say: Callable[[str], None] = print, poll_s: float = 2.0,
          plugins: tuple[str, ...] = (), live: bool | None = None) -> tuple[list[dict[str, Any]], dict[str, RunState]]:
    """Drive the compare ``cfg`` in ``out_dir`` through executor ``executor_name`` until every run is done,
    failed or blocked; returns the summaries of the finished runs (plan order) and every run's final state.
    Ctrl-C stops watching (the jobs go on) and is raised again after saying how to reattach."""
    out = Path(out_dir)
    options = dict(executor_options or {})
    executor = make_executor(executor_name, options)
    runs = plan(cfg)
    check(cfg, runs)  # everything that can be checked fails here, before any job is submitted
    _check_reuse(cfg, runs, out)
    with driving(out):
        _check_executor_switch(out, executor_name)
        atomic_write(out / "compare.json", lambda tmp: Path(tmp).write_text(_settings_json(cfg)))
        sw = Sweep(cfg, out, executor, executor_name, options, db_path, plugins)
        view = LiveView(say, live=sys.stdout.isatty() if live is None else live)
        say(f"{len(runs)} runs in {out} through {executor.describe()}")
        def report(states: dict[str, RunState]) -> None:
            for rs in states.values():  # each failure once, when it is final for this driver
                final = rs.state == "blocked" or (rs.state == "failed" and rs.name in sw.tried)
                if final and rs.name not in sw.reported:
                    sw.reported.add(rs.name)
                    view.note(failure_report(rs, out))

        try:
            while True:
                states = sw.assess()
                sw.record_finished(states)
                report(states)
                sw.submit(sw.ready(states), states)
                if executor.dependencies and sw.tried:  # runs that can wait in the queue for those just submitted
                    states = sw.assess()
                    sw.submit(sw.ready(states), states)
                states = sw.assess() if sw.tried else states
                report(states)
                view.show(states)
                if all(rs.state in ("done", "blocked") or (rs.state == "failed" and rs.name in sw.tried)
                       for rs in states.values()):
                    return sw.record_finished(states), states
                time.sleep(poll_s)
        except KeyboardInterrupt:
            live_jobs = [rs for rs in sw.assess().values() if rs.state in ("queued", "running")]
            say(f"\nstopped watching; {len(live_jobs)} job(s) keep running"
                + (f" ({', '.join(f'{r.name}: {r.job_id}' for r in live_jobs)})" if live_jobs else "")
                + f". Reattach with the same command, or see where it stands: zoo compare --status {out}")
            raise


def _check_executor_switch(out: Path, name: str) -> None:
    """A folder whose jobs went to another executor may change executor only when none of them still runs:
    the new one cannot see the old one's jobs, and would submit their runs a second time."""
    before = (read_ledger(out).get("executor") or {})
    if not before or before.get("name") == name:
        return
    old = make_executor(before["name"], before.get("options") or {})
    ids = [e["job_id"] for e in read_ledger(out)["runs"].values() if e.get("job_id")]
    live = sorted(old.states(ids, out)) if ids else []
    if live:
        raise ZooError(f"{out}: jobs submitted through executor {before['name']!r} still run ({', '.join(live)}); "
                       f"wait for them (zoo compare --status {out}) or cancel them before using {name!r}")


def failure_report(rs: RunState, out: Path) -> str:
    if rs.state == "blocked":
        return f"{rs.name}: blocked, {rs.error}; it was not started"
    return (f"{rs.name}: FAILED (job {rs.job_id}); run folder {out / rs.name}\n  {rs.error}\n"
            f"  end of its log ({rs.log}):\n" + "\n".join(f"    | {line}" for line in log_tail(Path(rs.log) if rs.log else None).splitlines())
            + f"\n  the other runs go on; run the same command again to retry it (it resumes from its last saved state)")


def status(out_dir: str | Path) -> tuple[dict[str, RunState], Sweep]:
    """Where the sweep in ``out_dir`` stands (nothing is submitted or recorded)."""
    out = Path(out_dir)
    ledger = read_ledger(out)
    if not (out / "compare.json").exists():
        raise ZooError(f"{out} holds no compare (no compare.json); give the --out folder of a `zoo compare`")
    cfg = load_config(out)
    info = ledger.get("executor") or {"name": "local", "options": {}}
    executor = make_executor(info["name"], info.get("options") or {})
    sw = Sweep(cfg, out, executor, info["name"], info.get("options") or {}, None)
    sw.tried = set(ledger.get("runs", {}))  # a failed job stays failed until a driver retries it
    return sw.assess(), sw


def status_table(states: dict[str, RunState]) -> str:
    """One line per run: state, job id, last validation CIDEr-D (×100, as the leaderboard shows it)."""
    counts = {s: sum(1 for r in states.values() if r.state == s) for s in STATES}
    head = "  ".join(f"{s} {n}" for s, n in counts.items() if n)
    width = max((len(n) for n in states), default=10)
    lines = [head, f"{'run':<{width}}  {'state':<8} {'job':<14} {'step':>6} {'val CIDEr-D':>11}"]
    for rs in states.values():
        score = f"{100 * rs.val_cider:.1f}" if rs.val_cider is not None else "-"
        lines.append(f"{rs.name:<{width}}  {rs.state:<8} {rs.job_id or '-':<14} {rs.step if rs.step is not None else '-':>6} {score:>11}")
    return "\n".join(lines)


class LiveView:
    """The sweep's table. On a terminal it is redrawn in place; elsewhere (a log file, CI) a line is
    printed only when a run's state changes, so the output stays readable."""

    def __init__(self, say: Callable[[str], None], live: bool) -> None:
        self.say, self.live = say, live
        self.lines = 0
        self.last: dict[str, tuple[str, str | None]] = {}

    def note(self, text: str) -> None:
        """A message between tables (a failure): kept on screen, the next table drawn below it."""
        self.say(text)
        self.lines = 0

    def show(self, states: dict[str, RunState]) -> None:
        if self.live:
            table = status_table(states)
            erase = f"\x1b[{self.lines}F\x1b[J" if self.lines else ""
            self.say(erase + table)
            self.lines = table.count("\n") + 1
            return
        for rs in states.values():
            now = (rs.state, rs.job_id)
            if self.last.get(rs.name) != now:
                self.last[rs.name] = now
                extra = f" (job {rs.job_id})" if rs.job_id else ""
                score = f", last val CIDEr-D {100 * rs.val_cider:.1f}" if rs.val_cider is not None else ""
                self.say(f"{rs.name}: {rs.state}{extra}{score}")


def missing_note(states: dict[str, RunState]) -> str | None:
    """What the leaderboard lacks: the runs that did not finish, and why."""
    missing = [rs for rs in states.values() if rs.state != "done"]
    if not missing:
        return None
    return "not on the leaderboard: " + "; ".join(f"{rs.name} ({rs.state})" for rs in missing)


__all__ = ["LEDGER", "RunState", "Sweep", "LiveView", "make_executor", "parse_settings", "status", "status_table",
           "sweep", "missing_note"]
