"""Shared fixtures. Third-party plugin autoload is off in tests (the Makefile also sets it)."""

from __future__ import annotations

import os

os.environ.setdefault("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
# the thread count changes the last bits of training (zoo.runtime.threads): the tests compare runs bit for bit
# (resume, sweeps through other executors), so `zoo` commands here and the processes they start use a fixed
# count rather than following the load of a shared machine; tests/test_threads.py sets its own environment
os.environ.setdefault("ZOO_NUM_THREADS", str(torch.get_num_threads()))

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test saying what is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs the shared test data at {p} (absent here; CI always has it)")
    return p


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    """A feature cache of the test module's own (``ZOO_FEATURE_CACHE``), shared by its tests."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ZOO_FEATURE_CACHE", str(tmp_path_factory.mktemp("features")))
    yield
    mp.undo()


@pytest.fixture
def coco_mini() -> Path:
    return shared_path("coco-mini")


@pytest.fixture
def coco_val_captions() -> Path:
    return shared_path("coco-captions-val2014", "captions_val2014.json.gz")


@pytest.fixture
def eval_example() -> Path:
    return shared_path("coco-eval-example")


@pytest.fixture
def fresh_registry():
    """Rebuild the plugin manager and registry around a test that loads extra plugins."""
    import zoo.registry.manager

    zoo.registry.manager.reset()
    yield
    zoo.registry.manager.reset()


@pytest.fixture
def small_disk(tmp_path):
    """Real full disks: ``small_disk(size_bytes)`` mounts a fresh tmpfs of that size on a new folder under
    ``tmp_path`` and returns it; every one is unmounted at teardown. Skips, saying why, where mounting is
    not allowed (not root, or no CAP_SYS_ADMIN in a container). Fill it with ``tests.helpers.fill_disk``."""
    import subprocess

    mounted: list[Path] = []

    def mount(size: int, name: str | None = None) -> Path:
        folder = tmp_path / (name or f"disk{len(mounted)}")
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size)}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"needs a small tmpfs to fill, and mounting is not allowed here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
