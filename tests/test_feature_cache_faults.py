"""The feature cache against damage and full disks (issue 17, items 3 and 4): a damaged entry is named and
rebuilt, never trained on; a disk without room is a clear error, never a bus error, and leaves nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from zoo.cli import main as zoo_main
from zoo.data.feature_cache import FeatureCacheError, FeatureCacheWarning, get_or_build, list_entries

from .conftest import ROOT
from .helpers import fill_disk
from .test_feature_cache import _build, setup  # noqa: F401 - the same encoder, data set and build as there


def test_random_bytes_in_an_entry_are_named_and_the_entry_rebuilt(setup):
    enc, ds, root = setup
    log: list = []
    first = _build(enc, ds, root, log)
    good = np.array(first.grid)
    path = first.path / "grid.npy"
    middle = path.stat().st_size // 2
    with open(path, "r+b") as fh:  # the fault: random bytes in the middle, size unchanged
        fh.seek(middle)
        fh.write(np.random.default_rng(0).bytes(64))
    del first
    with pytest.warns(FeatureCacheWarning) as caught:
        again = _build(enc, ds, root, log)
    msg = str(caught[0].message)
    assert str(path) in msg and "damaged" in msg and "do not match their checksum" in msg and "rebuilt" in msg
    assert len(log) == 2  # rebuilt, not used
    assert np.allclose(np.array(again.grid), good, atol=1e-5)  # the encoder's features again, not the damage
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureCacheWarning)
        _build(enc, ds, root, log)  # the rebuilt entry checks clean and is used
    assert len(log) == 2


def test_a_truncated_or_unchecked_entry_is_named_and_rebuilt(setup):
    enc, ds, root = setup
    log: list = []
    first = _build(enc, ds, root, log)
    path = first.path / "pooled.npy"
    del first
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 100)
    with pytest.warns(FeatureCacheWarning, match="pooled.npy"):
        _build(enc, ds, root, log)
    assert len(log) == 2


def test_no_room_for_an_entry_is_refused_before_writing_and_leaves_nothing(tmp_path, small_disk, monkeypatch, capsys):
    """``zoo train`` on a cache disk too small for the entry: a message saying how much it needs and what
    to do, exit 2, and neither a partial cache folder nor a run folder left behind."""
    cache = small_disk(512 * 1024)
    monkeypatch.setenv("ZOO_FEATURE_CACHE", str(cache))
    out = tmp_path / "run"
    rc = zoo_main(["train", "--encoder", "resnet10t", "--decoder", "gru", "--tokenizer", "word", "--freeze",
                   "--val-split", "none", "--set", "data.num_train=16", "--set", "train.steps=2",
                   "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert "no room for feature cache entry" in err and "free" in err and "cache_dtype=float16" in err, err
    assert list(cache.iterdir()) == [] and not out.exists()


def test_a_disk_that_fills_while_writing_is_an_error_not_a_bus_error(tmp_path, small_disk):
    """Where free space cannot be told beforehand, the full size is reserved before writing: ENOSPC there
    is the same clear error. Run in a child process: the old memory-mapped writes died of SIGBUS (exit 135)."""
    cache = small_disk(128 * 1024)
    fill_disk(cache, leave=32 * 1024)
    script = textwrap.dedent(f"""
        import torch, zoo
        import zoo.data.feature_cache as fc
        from zoo.data.datasets import load_dataset
        fc.free_bytes = lambda path: None  # a system that does not say how much room is left
        enc = zoo.create_encoder("resnet10t", img_size=48, freeze=True)
        ds = load_dataset("shapes", split="val", num_train=10, num_val=24, num_test=10)
        try:
            fc.get_or_build(enc, ds, root={str(cache)!r}, batch_size=8, progress=False)
        except fc.FeatureCacheError as exc:
            print("REFUSED", exc)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"ZOO_DISABLE_PLUGIN_AUTOLOAD": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "REFUSED the disk filled up while writing feature cache entry" in done.stdout, done.stdout
    assert [p.name for p in cache.iterdir()] == ["filler"]  # no .partial-* folder left
    assert list_entries(cache) == []


def test_the_room_check_counts_the_entry(setup, small_disk):
    enc, ds, _ = setup
    cache = small_disk(256 * 1024)  # the entry (24 images of 2×2×512 + 512 floats) is ~250 KB, plus margin
    with pytest.raises(FeatureCacheError, match=r"needs 24\d\.\d KB \(24 images, float32\)"):
        get_or_build(enc, ds, root=cache, batch_size=8, progress=False)
    assert list(cache.iterdir()) == []


@pytest.mark.filterwarnings("ignore:CIDEr-D")
def test_training_on_a_damaged_entry_rebuilds_it_first(tmp_path, monkeypatch):
    """The issue's case end to end: bytes that read as NaN written into an entry's grid.npy; the next run
    names the entry, rebuilds it, and trains on finite features (before: loss NaN, a state of NaN tensors)."""
    import math

    from zoo.training.runs import RunSpec, execute

    monkeypatch.setenv("ZOO_FEATURE_CACHE", str(tmp_path / "cache"))
    spec = RunSpec(encoder="resnet10t", decoder="gru-attn", tokenizer="word", data="shapes",
                   encoder_kwargs={"img_size": 32, "freeze": True}, decoder_kwargs={"embed_size": 8, "hidden_size": 16},
                   tokenizer_kwargs={"min_count": 0}, val_split=None,
                   data_options={"num_train": 16, "num_val": 2, "num_test": 2, "image_size": 32},
                   train={"steps": 3, "batch_size": 8, "log_every": 1, "progress": False})
    execute(spec, tmp_path / "first", progress=False)
    (entry,) = [p for p in (tmp_path / "cache").iterdir()]
    grid = entry / "grid.npy"
    with open(grid, "r+b") as fh:
        fh.seek(grid.stat().st_size // 2)
        fh.write(b"\xff" * 256)  # 0xffffffff is a NaN as float32
    with pytest.warns(FeatureCacheWarning, match=r"grid.npy bytes .* do not match their checksum"):
        result = execute(spec, tmp_path / "second", progress=False)
    assert result.final_loss is not None and math.isfinite(result.final_loss)
    assert all(math.isfinite(e["loss"]) for e in result.history if "loss" in e)
