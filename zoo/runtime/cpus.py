"""The CPUs this process may use, and how busy other processes keep them (Linux; elsewhere: no limits known,
no measurement).

Why not ``os.cpu_count()``: it counts the machine's CPUs, not this process's. A process pinned to some of
them (``taskset``, a scheduler's affinity, a concurrent run given its own cores) may run on fewer; a
container limited by a cgroup CPU quota (``docker --cpus=2``, a Kubernetes CPU limit, Slurm with cgroups)
sees every CPU of the host but gets only the quota's worth of time, and threads beyond it are throttled.

- :func:`usable_cores`: the affinity set's size, capped by the cgroup quota (v2 ``cpu.max``; v1
  ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), of this cgroup and every ancestor; whole cores, at least one.
- :class:`CpuMeter`: how many of a set of CPUs *other* processes used since the last reading: the CPUs'
  busy time (``/proc/stat``) less this process's own (its threads, and its child processes such as data
  loader workers).

Every reader takes ``root`` (default ``/``), the directory holding ``proc`` and ``sys``: the input parsing
is tested on a fake tree.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path


def affinity() -> frozenset[int]:
    """The CPUs this process may run on (its affinity set; every CPU where the OS has no such call)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return frozenset(range(os.cpu_count() or 1))


# -- the cgroup CPU quota -----------------------------------------------------------------------------------
def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _v2_quota(folder: Path) -> float | None:
    """Cores allowed by ``cpu.max`` (``"QUOTA PERIOD"`` or ``"max PERIOD"``) in one cgroup v2 folder."""
    text = _read(folder / "cpu.max")
    if not text:
        return None
    parts = text.split()
    if len(parts) < 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(folder: Path) -> float | None:
    """Cores allowed by ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1: none) in one v1 folder."""
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    try:
        q, p = int(quota or "-1"), int(period or "0")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


@dataclass(frozen=True)
class _Mount:
    root: str  # the cgroup path mounted there ("/" unless the mount shows a sub-tree)
    point: str  # where it is mounted
    v2: bool


def _cpu_mounts(mountinfo: str) -> list[_Mount]:
    """The cgroup2 mounts, and the cgroup v1 mounts of the ``cpu`` controller, from ``/proc/self/mountinfo``
    (fields: id parent dev root mountpoint options [optional…] - fstype source superoptions)."""
    out = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fstype, superopts = tail[0], tail[2].split(",")
        if fstype == "cgroup2" or (fstype == "cgroup" and "cpu" in superopts):
            out.append(_Mount(fields[3], fields[4].replace("\\040", " "), fstype == "cgroup2"))
    return out


def _own_cgroups(cgroup: str) -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and its v1 ``cpu`` controller path, from ``/proc/self/cgroup``
    (lines ``ID:CONTROLLERS:PATH``; v2 is ``0::PATH``)."""
    v2 = v1 = None
    for line in cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path.strip()
        elif "cpu" in controllers.split(","):
            v1 = path.strip()
    return v2, v1


def _folders(root: Path, mount: _Mount, path: str) -> list[Path]:
    """The cgroup folder of ``path`` under ``mount`` and each ancestor up to the mount point (a limit
    set on a parent binds its children too)."""
    rel = os.path.relpath(path, mount.root) if path.startswith(mount.root) else path.lstrip("/")
    if rel.startswith(".."):  # the process's cgroup is outside what is mounted here (a namespace's view)
        rel = "."
    base = root / mount.point.lstrip("/")
    parts = [p for p in Path(rel).parts if p not in (".", "/")]
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_quota(root: Path = Path("/")) -> float | None:
    """The CPU time this process's cgroups allow, in cores (``1.5``: one and a half cores' worth), or None
    when no quota is set (or none can be read). The smallest over this cgroup and its ancestors, v2 and
    v1 alike."""
    cgroup = _read(root / "proc/self/cgroup")
    mountinfo = _read(root / "proc/self/mountinfo")
    if cgroup is None or mountinfo is None:
        return None
    v2_path, v1_path = _own_cgroups(cgroup)
    limits = []
    for mount in _cpu_mounts(mountinfo):
        path = v2_path if mount.v2 else v1_path
        if path is None:
            continue
        read = _v2_quota if mount.v2 else _v1_quota
        limits += [q for q in map(read, _folders(root, mount, path)) if q is not None]
    return min(limits) if limits else None


def usable_cores(cpus: frozenset[int] | None = None, root: Path = Path("/")) -> int:
    """Whole cores this process may use: its affinity set (``cpus``, default the process's own), at most
    the cgroup quota rounded down (a thread beyond it is throttled, and an OpenMP team waits for its
    slowest thread); at least 1."""
    n = len(affinity() if cpus is None else cpus)
    quota = cgroup_quota(root)
    if quota is not None:
        n = min(n, math.floor(quota + 1e-9))
    return max(n, 1)


# -- how busy other processes keep our CPUs ---------------------------------------------------------------
def cpu_busy_ticks(stat: str, cpus: frozenset[int]) -> tuple[int, int]:
    """(busy, total) clock ticks of ``cpus`` summed, from the text of ``/proc/stat`` (lines ``cpuN user nice
    system idle iowait irq softirq steal guest guest_nice``). Idle and iowait are free time; everything
    else, steal included (a hypervisor's other guests), is busy; guest time is already inside user."""
    busy = total = 0
    for line in stat.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *values = line.split()
        try:
            cpu = int(name[3:])
        except ValueError:
            continue
        if cpu not in cpus:
            continue
        v = [int(x) for x in values[:8]] + [0] * (8 - len(values[:8]))
        idle = v[3] + v[4]
        all_ = sum(v)
        busy += all_ - idle
        total += all_
    return busy, total


def _stat_ticks(root: Path, pid: str, fields: slice) -> int:
    """The sum of ``fields`` of ``/proc/PID/stat`` (counted after the command name), in clock ticks; 0 when
    it cannot be read (a process that has just ended)."""
    text = _read(root / "proc" / pid / "stat")
    if not text:
        return 0
    values = text.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    try:
        return sum(int(v) for v in values[fields])
    except ValueError:
        return 0


def _proc_ticks(root: Path, pid: str) -> int:
    """utime + stime of one process (all its threads), in clock ticks (fields 14 and 15 of proc(5))."""
    return _stat_ticks(root, pid, slice(11, 13))


def _children(root: Path, pid: str) -> list[str]:
    kids: list[str] = []
    try:
        tasks = list((root / "proc" / pid / "task").iterdir())
    except OSError:
        return kids
    for task in tasks:
        kids += (_read(task / "children") or "").split()
    return kids


def own_ticks(root: Path = Path("/"), pid: str = "self") -> int:
    """CPU clock ticks used by this process (every thread) and its living descendants, plus the children
    it has already waited for (``cutime``/``cstime``): all of it is ours, not another program's."""
    total = _stat_ticks(root, pid, slice(11, 15))  # utime stime cutime cstime
    seen = set()
    todo = _children(root, pid)
    while todo:
        kid = todo.pop()
        if kid in seen:
            continue
        seen.add(kid)
        total += _proc_ticks(root, kid)
        todo += _children(root, kid)
    return total


@dataclass
class CpuMeter:
    """Reads, at each :meth:`others`, how many cores' worth of ``cpus`` other processes used since the
    previous call: (busy ticks of the CPUs − this process's ticks) / (elapsed ticks per CPU)."""

    cpus: frozenset[int]
    root: Path = Path("/")
    _last: tuple[int, int, int] | None = None

    def _reading(self) -> tuple[int, int, int] | None:
        stat = _read(self.root / "proc/stat")
        if not stat:
            return None
        busy, total = cpu_busy_ticks(stat, self.cpus)
        return busy, total, own_ticks(self.root)

    def others(self) -> float | None:
        """Cores used by other processes since the last call (None on the first call, or when nothing can
        be read, or when no time passed)."""
        now = self._reading()
        last, self._last = self._last, now
        if now is None or last is None:
            return None
        busy, total, own = (a - b for a, b in zip(now, last))
        if total <= 0 or not self.cpus:
            return None
        per_cpu = total / len(self.cpus)  # elapsed ticks
        return max(busy - own, 0) / per_cpu
