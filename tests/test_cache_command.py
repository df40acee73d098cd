"""Feature-cache housekeeping: a build killed with -9 leaves a partial folder that the next build of that
entry removes (never a live build's), and `zoo cache list/prune` show and remove entries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import zoo
from zoo.cli import main as zoo_main
from zoo.data.datasets import load_dataset
from zoo.data.feature_cache import OWNER, PARTIAL, get_or_build, is_live_build

ROOT = Path(__file__).resolve().parent.parent

BUILD = """
import os, signal, sys, torch, zoo
from zoo.data.datasets import load_dataset
from zoo.data.feature_cache import get_or_build
torch.manual_seed(0)
enc = zoo.create_encoder("resnet10t", img_size=32, freeze=True)
ds = load_dataset("shapes", split="val", num_train=10, num_val=24, num_test=10, image_size=32)
real = enc.forward
def forward(images):
    out = real(images)
    if forward.calls == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the build
    forward.calls += 1
    return out
forward.calls = 0
enc.forward = forward
get_or_build(enc, ds, root=sys.argv[1], batch_size=8, progress=False)
"""


def _encoder_and_data():
    torch.manual_seed(0)
    enc = zoo.create_encoder("resnet10t", img_size=32, freeze=True)
    return enc, load_dataset("shapes", split="val", num_train=10, num_val=24, num_test=10, image_size=32)


def test_a_build_killed_with_sigkill_leaves_a_partial_that_the_next_build_removes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ZOO_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run([sys.executable, "-c", BUILD, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    partials = [p for p in tmp_path.iterdir() if PARTIAL in p.name]
    assert len(partials) == 1 and (partials[0] / "grid.npy").exists()  # what the killed build left
    assert not is_live_build(partials[0])

    enc, ds = _encoder_and_data()
    cache = get_or_build(enc, ds, root=tmp_path, batch_size=8, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [cache.path.name]
    assert cache.path.name + PARTIAL in partials[0].name  # it was this entry's partial build


def _fake_partial(root: Path, entry: str, owner: dict | None, age_s: float = 0.0) -> Path:
    p = root / f"{entry}{PARTIAL}{len(list(root.iterdir()))}"
    p.mkdir()
    (p / "grid.npy").write_bytes(b"\0" * 1000)
    if owner is not None:
        (p / OWNER).write_text(json.dumps(owner))
    if age_s:
        old = time.time() - age_s
        for f in [*p.iterdir(), p]:
            os.utime(f, (old, old))
    return p


def test_only_builds_whose_builder_is_gone_count_as_abandoned(tmp_path):
    import socket

    from zoo.data.feature_cache import _owner, remove_abandoned

    here = socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = _fake_partial(tmp_path, "enc-1", _owner())  # this very process
    killed = _fake_partial(tmp_path, "enc-1", {**_owner(), "pid": dead.pid, "process_start": None})
    reused = _fake_partial(tmp_path, "enc-1", {**_owner(), "process_start": "1"})  # our pid, another process
    remote = _fake_partial(tmp_path, "enc-1", {"pid": 1, "host": here + "-elsewhere"})
    remote_old = _fake_partial(tmp_path, "enc-1", {"pid": 1, "host": here + "-elsewhere"}, age_s=3 * 86400)
    other_entry = _fake_partial(tmp_path, "enc-2", {**_owner(), "pid": dead.pid, "process_start": None})
    removed = remove_abandoned(tmp_path, "enc-1")
    assert sorted(removed) == sorted([killed, reused, remote_old])
    assert live.exists() and remote.exists() and other_entry.exists()


def test_cache_list_and_prune(tmp_path, capsys):
    from zoo.data.feature_cache import _owner

    enc, ds = _encoder_and_data()
    cache = get_or_build(enc, ds, root=tmp_path, batch_size=8, progress=False)
    live = _fake_partial(tmp_path, cache.path.name, _owner())
    dead = subprocess.Popen(["true"])
    dead.wait()
    killed = _fake_partial(tmp_path, cache.path.name, {**_owner(), "pid": dead.pid, "process_start": None})

    assert zoo_main(["cache", "list", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith(cache.path.name + " "))
    assert "resnet10t" in line and "shapes/val" in line and " 24 " in line and "complete" in line and "KB" in line
    assert "building" in out and "abandoned" in out and "3 folder(s)" in out

    assert zoo_main(["cache", "prune", "--all", "--dry-run", "--cache-dir", str(tmp_path)]) == 0
    assert "would remove" in capsys.readouterr().out and killed.exists() and cache.path.exists()

    assert zoo_main(["cache", "prune", "--cache-dir", str(tmp_path)]) == 0  # no selection: leftovers only
    assert not killed.exists() and cache.path.exists() and live.exists()
    capsys.readouterr()

    assert zoo_main(["cache", "prune", "resnet*", "--older-than", "1", "--cache-dir", str(tmp_path)]) == 0
    assert cache.path.exists()  # used just now
    old = time.time() - 2 * 86400
    os.utime(cache.path / "meta.json", (old, old))
    assert zoo_main(["cache", "prune", "resnet*", "--older-than", "1", "--cache-dir", str(tmp_path)]) == 0
    assert not cache.path.exists() and live.exists()  # a build in progress is never removed
    assert "removed 1 folder(s)" in capsys.readouterr().out

    again = get_or_build(enc, ds, root=tmp_path, batch_size=8, progress=False)  # rebuilt after removal
    assert zoo_main(["cache", "prune", "--all", "--cache-dir", str(tmp_path)]) == 0
    assert not again.path.exists() and live.exists()
    with pytest.raises(SystemExit):
        zoo_main(["cache", "prune", "--older-than", "x"])
