"""CPU threads of a ``zoo`` command (``zoo.runtime.threads``, ``zoo.runtime.cpus``): the cores a process may
really use (affinity, cgroup quota), which setting wins, and the thread count that follows the CPUs other
processes leave free. The real-process tests pin processes to CPUs and put one in a real cgroup; none
asserts a time or a speed (speed: ``benchmarks/bench_threads.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from zoo.runtime import threads
from zoo.runtime.cpus import CpuMeter, cgroup_quota, cpu_busy_ticks, own_ticks, usable_cores
from zoo.runtime.threads import ThreadGovernor, adapts, default_threads, threads_for

ROOT = Path(__file__).resolve().parent.parent
CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
CHILD_ENV = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "ZOO_NUM_THREADS",
                                                               "LOCAL_WORLD_SIZE", "MKL_NUM_THREADS")}
CHILD_ENV.update(PYTHONPATH=str(ROOT), ZOO_DISABLE_PLUGIN_AUTOLOAD="1")
needs_two_cpus = pytest.mark.skipif(len(CPUS) < 2 or usable_cores(frozenset(CPUS)) < 2,
                                    reason="needs a process allowed on 2 CPUs or more (Linux), with no lower CPU quota")


# -- which setting wins ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("env, adapting", [
    ({}, True),                                                   # nothing said: follow the free CPUs
    ({"ZOO_NUM_THREADS": "2"}, False),                            # the zoo's switch: fixed
    ({"OMP_NUM_THREADS": "2"}, False),                            # the user's OpenMP setting: fixed
    ({"OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "2"}, True),    # torchrun's own default is no one's choice
    ({"OMP_NUM_THREADS": "1"}, False),                            # ... but without torchrun it is the user's
    ({"ZOO_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "2"}, False),
    ({"ZOO_NUM_THREADS": " "}, True),                             # blank is unset
])
def test_a_users_thread_setting_turns_adaptation_off(env, adapting):
    assert adapts(env) is adapting


@pytest.mark.parametrize("env, expected", [
    ({}, 3), ({"LOCAL_WORLD_SIZE": "2"}, 1), ({"ZOO_NUM_THREADS": "5"}, 5), ({"OMP_NUM_THREADS": "4"}, None),
])
def test_the_start_up_count_is_the_budget(env, expected):
    # 3 usable cores, torch's default 4: the budget is the cores, shared among local ranks
    assert default_threads(env, 3, 4) == expected


# -- the decision ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget, cpus, others, expected", [
    (2, 2, 0.0, 2),     # alone: every core
    (2, 2, 0.3, 2),     # a little background: keep both
    (2, 2, 0.67, 1),    # a busy process beside a spinning team gets ~2/3 of its core: it holds one
    (2, 2, 1.0, 1),
    (2, 2, 2.0, 1),     # never below one
    (8, 8, 1.5, 6),     # 1.5 cores' worth taken: two CPUs gone
    (4, 8, 1.0, 4),     # the budget caps (another local rank owns the rest)
    (4, 8, 5.0, 3),
])
def test_threads_follow_the_cpus_left_free(budget, cpus, others, expected):
    assert threads_for(budget, cpus, others) == expected


def test_the_count_drops_at_once_and_rises_only_when_readings_agree():
    count = [2]
    gov = ThreadGovernor(lambda cpus: 2, apply=lambda n: count.__setitem__(0, n), current=lambda: count[0])
    assert gov.decide(1.0, 2, 2) == 1 and count[0] == 1      # a busy process: down at once
    assert gov.decide(0.0, 2, 2) == 1                        # one quiet reading: not yet
    assert gov.decide(1.0, 2, 2) == 1                        # busy again: the count of quiet ones restarts
    assert gov.decide(0.0, 2, 2) == 1
    assert gov.decide(0.0, 2, 2) == 2 and count[0] == 2      # two quiet readings in a row: up
    assert [chosen for _, chosen in gov.readings] == [1, 1, 1, 1, 2]


# -- reading /proc and the cgroup files (a fake tree: input parsing) -------------------------------------------
def _stat_line(cpu: str, user: int, idle: int, steal: int = 0) -> str:
    return f"{cpu} {user} 0 0 {idle} 0 0 0 {steal} 0 0"


def _proc(root: Path, cpu_busy: list[int], cpu_idle: list[int], own: int, child: int) -> None:
    lines = [_stat_line("cpu", sum(cpu_busy), sum(cpu_idle))]
    lines += [_stat_line(f"cpu{i}", b, i_) for i, (b, i_) in enumerate(zip(cpu_busy, cpu_idle))]
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc/stat").write_text("\n".join(lines + ["intr 1 2 3", "ctxt 9"]) + "\n")
    for pid, ticks, kids in (("self", own, "200 "), ("200", child, "")):
        (root / "proc" / pid / "task" / "1").mkdir(parents=True, exist_ok=True)
        # comm with a space and a parenthesis; utime stime cutime cstime are fields 14-17
        fields = ["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0", str(ticks), "0", "0", "0", "20"]
        (root / "proc" / pid / "stat").write_text(f"{pid} (py thon) x) " + " ".join(fields) + "\n")
        (root / "proc" / pid / "task" / "1" / "children").write_text(kids)


def test_busy_time_of_our_cpus_less_our_own_is_what_others_used(tmp_path):
    stat = "\n".join([_stat_line("cpu", 30, 70), _stat_line("cpu0", 10, 40, steal=5), _stat_line("cpu1", 20, 30)])
    assert cpu_busy_ticks(stat, frozenset({0})) == (15, 55)  # steal is busy: another guest had the CPU
    assert cpu_busy_ticks(stat, frozenset({0, 1})) == (35, 105)
    _proc(tmp_path, [0, 0], [0, 0], own=7, child=5)
    assert own_ticks(tmp_path) == 12  # a child process's time is ours too (data loader workers)

    meter = CpuMeter(frozenset({0, 1}), tmp_path)
    assert meter.others() is None  # the first reading only starts the count
    # 100 ticks per CPU pass; the CPUs were busy 150 ticks, 60 of them ours (40 our threads, 20 our child)
    _proc(tmp_path, [80, 70], [20, 30], own=47, child=25)
    assert meter.others() == pytest.approx(0.9)
    # only our own threads busy: nobody else
    _proc(tmp_path, [180, 170], [20, 30], own=247, child=25)
    assert meter.others() == pytest.approx(0.0)
    # a CPU outside our set does not count
    assert CpuMeter(frozenset({5}), tmp_path).others() is None


def _cgroup_tree(root: Path, cgroup: str, mounts: list[str], files: dict[str, str]) -> Path:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    (root / "proc/self/mountinfo").write_text("\n".join(mounts) + "\n")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate"
V1_MOUNT = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct"


def test_the_cgroup_v2_quota_of_this_cgroup_and_its_ancestors(tmp_path):
    root = _cgroup_tree(tmp_path / "a", "0::/kubepods/pod1/c1\n", [V2_MOUNT], {
        "sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "max 100000\n",           # no limit here...
        "sys/fs/cgroup/kubepods/pod1/cpu.max": "250000 100000\n",           # ...but the pod has 2.5 cores
        "sys/fs/cgroup/kubepods/cpu.max": "max 100000\n",
    })
    assert cgroup_quota(root) == 2.5
    assert usable_cores(frozenset(range(16)), root) == 2  # whole cores: a third thread would be throttled
    assert usable_cores(frozenset({3}), root) == 1        # the affinity is smaller still
    nolimit = _cgroup_tree(tmp_path / "b", "0::/\n", [V2_MOUNT], {"sys/fs/cgroup/cpu.max": "max 100000\n"})
    assert cgroup_quota(nolimit) is None and usable_cores(frozenset(range(16)), nolimit) == 16
    half = _cgroup_tree(tmp_path / "c", "0::/x\n", [V2_MOUNT], {"sys/fs/cgroup/x/cpu.max": "50000 100000"})
    assert cgroup_quota(half) == 0.5 and usable_cores(frozenset(range(4)), half) == 1  # at least one


def test_the_cgroup_v1_quota_and_a_containers_own_view(tmp_path):
    cgroup = "12:pids:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/docker/abc\n"
    root = _cgroup_tree(tmp_path / "a", cgroup, [V1_MOUNT], {
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        "sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_quota_us": "-1\n",
        "sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_period_us": "100000\n",
    })
    assert cgroup_quota(root) == 3.0 and usable_cores(frozenset(range(64)), root) == 3
    # inside the container the mount shows its own cgroup as the root of the tree
    inside = V1_MOUNT.replace(" / /sys", " /docker/abc /sys")
    root = _cgroup_tree(tmp_path / "b", cgroup, [inside], {
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "150000\n",
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    })
    assert cgroup_quota(root) == 1.5
    # unreadable or absent: no limit known, the affinity counts
    assert cgroup_quota(tmp_path / "nothing") is None
    assert usable_cores(frozenset({0, 1}), tmp_path / "nothing") == 2


# -- the Python API does not adapt; the command does, and ends it ----------------------------------------------
def test_the_python_api_never_changes_the_thread_count():
    before = torch.get_num_threads()
    assert threads.governor() is None
    for _ in range(3):
        assert threads.adapt_threads() is None  # the training loop's hook: nothing to do
    assert torch.get_num_threads() == before


def test_the_training_loop_consults_the_commands_adaptation(tmp_path, monkeypatch):
    from tests.test_train import tiny_spec
    from zoo.training.runs import execute

    monkeypatch.setenv("ZOO_FEATURE_CACHE", str(tmp_path / "features"))
    before = torch.get_num_threads()
    try:
        threads.configure_threads({})  # what the zoo command does at start-up
        gov = threads.governor()
        assert gov is not None
        gov.interval = 10**6  # no reading due: the count stays the budget
        ticks = gov.ticks
        execute(tiny_spec(steps=3), tmp_path / "run", progress=False)
        assert gov.ticks - ticks == 3  # once per step
    finally:
        threads.stop_adapting()
        torch.set_num_threads(before)


def test_the_command_ends_its_adaptation_when_it_returns(monkeypatch, capsys):
    from zoo.cli import main

    before = torch.get_num_threads()
    monkeypatch.delenv("ZOO_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert main(["list", "decoders"]) == 0
        assert threads.governor() is None  # a program that called main() is not adapted behind its back
        monkeypatch.setenv("ZOO_NUM_THREADS", "1")
        assert main(["list", "decoders"]) == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# -- real processes ------------------------------------------------------------------------------------------
START = "import torch; from zoo.runtime.threads import configure_threads; print(configure_threads(), flush=True)"


def _run(code: str, cpus: set[int] | None = None, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    return subprocess.Popen([sys.executable, "-c", code], env={**CHILD_ENV, **(env or {})}, stdout=subprocess.PIPE,
                            text=True, preexec_fn=pre, **kw)


@needs_two_cpus
def test_a_process_pinned_to_fewer_cpus_uses_that_many_threads():
    one = _run(START, cpus={CPUS[0]})
    assert one.communicate(timeout=120)[0].split() == ["1"]
    both = _run(START, cpus=set(CPUS[:2]))
    assert both.communicate(timeout=120)[0].split() == ["2"]
    told = _run(START, cpus={CPUS[0]}, env={"ZOO_NUM_THREADS": "2"})  # the user's number wins
    assert told.communicate(timeout=120)[0].split() == ["2"]


def _cpu_cgroup_v1() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[:1] == ["cgroup"] and "cpu" in right.split()[2].split(","):
            return Path(left.split()[4])
    return None


@needs_two_cpus
def test_a_process_in_a_cgroup_with_a_one_core_quota_uses_one_thread(tmp_path):
    """Before: a process given one core's worth of CPU time by its cgroup took a thread per CPU it saw."""
    mount = _cpu_cgroup_v1()
    v2 = Path("/sys/fs/cgroup")
    if mount is not None:
        folder, files = mount / f"zoo-test-{os.getpid()}", {"cpu.cfs_quota_us": "100000", "cpu.cfs_period_us": "100000"}
    elif "cpu" in (v2 / "cgroup.controllers").read_text().split() if (v2 / "cgroup.controllers").exists() else False:
        folder, files = v2 / f"zoo-test-{os.getpid()}", {"cpu.max": "100000 100000"}
    else:
        pytest.skip("no cgroup CPU controller mounted")
    try:
        folder.mkdir()
        for name, value in files.items():
            (folder / name).write_text(value)
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup with a CPU quota here ({exc}): needs root and a writable cgroup tree")
    try:
        procs = str(folder / "cgroup.procs")

        def enter() -> None:
            os.sched_setaffinity(0, set(CPUS[:2]))
            Path(procs).write_text(str(os.getpid()))

        child = subprocess.Popen([sys.executable, "-c", START], env=CHILD_ENV, stdout=subprocess.PIPE, text=True,
                                 preexec_fn=enter)
        assert child.communicate(timeout=120)[0].split() == ["1"]
    finally:
        folder.rmdir()


ADAPTING = """
import time, torch
from zoo.runtime import threads
print(threads.configure_threads(), flush=True)
gov = threads.governor()
gov.interval = 0.25
while True:
    chosen = threads.adapt_threads()
    if chosen is not None:
        print(chosen, torch.get_num_threads(), flush=True)
    time.sleep(0.02)
"""


@needs_two_cpus
def test_the_thread_count_drops_while_a_busy_process_holds_one_of_our_cpus():
    """A process on two CPUs, adapting: one busy loop pinned to one of them takes it. Polls generously: on a
    shared machine the count may drop earlier (others' work counts too); what must hold is that it does
    drop, and that torch follows."""
    cpus = set(CPUS[:2])
    child = _run(ADAPTING, cpus=cpus)
    busy = None
    try:
        assert child.stdout.readline().split() == ["2"]  # start: the budget
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                preexec_fn=lambda: os.sched_setaffinity(0, {CPUS[0]}))
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = child.stdout.readline().split()
            seen.append(line)
            if line == ["1", "1"]:  # chose one thread, and torch uses one
                break
        assert seen[-1] == ["1", "1"], f"never dropped to one thread beside a busy process: {seen[-10:]}"
    finally:
        for p in (busy, child):
            if p is not None:
                p.kill()
                p.wait()


def test_a_count_lowered_for_a_busy_moment_is_not_the_next_commands_default():
    """A program (or the benchmark) that runs two commands in one process: the first adapted down to one
    thread when the machine was busy; the second must start from the count the first started with, not
    take that one thread as torch's default for good."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        started = threads.configure_threads({})
        gov = threads.governor()
        assert gov is not None and started == torch.get_num_threads()
        gov.decide(others=1.0, cpus=2, budget=started)  # a busy moment: down at once
        assert torch.get_num_threads() == max(started - 1, 1)
        threads.stop_adapting()
        assert torch.get_num_threads() == started
        assert threads.configure_threads({}) == started
    finally:
        threads.stop_adapting()
        torch.set_num_threads(before)
