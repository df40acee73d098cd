"""The feature cache: reused when valid, rebuilt when stale or partial, equal to the encoder's output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import zoo
from zoo.data.datasets import ImageDataset, load_dataset
from zoo.data.feature_cache import FeatureCacheWarning, get_or_build


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    enc = zoo.create_encoder("resnet10t", img_size=48, freeze=True)
    ds = load_dataset("shapes", split="val", num_train=10, num_val=24, num_test=10)
    return enc, ds, tmp_path


def _build(enc, ds, root, log):
    return get_or_build(enc, ds, root=root, batch_size=8, progress=False, on_build=log.append)


def test_cache_equals_encoder_and_is_reused(setup):
    enc, ds, root = setup
    log: list = []
    cache = _build(enc, ds, root, log)
    assert len(log) == 1 and len(cache) == len(ds)
    tf = enc.transform()
    imgs = torch.stack([ImageDataset(ds, tf)[i][1] for i in (0, 5, 23)])
    with torch.no_grad():
        direct = enc(imgs)
    got = cache.batch([0, 5, 23])
    assert torch.allclose(got.grid, direct.grid, atol=1e-6) and torch.allclose(got.pooled, direct.pooled, atol=1e-6)
    again = _build(enc, ds, root, log)
    assert len(log) == 1 and again.path == cache.path  # reused, not recomputed


def test_partial_cache_is_rebuilt(setup):
    enc, ds, root = setup
    log: list = []
    cache = _build(enc, ds, root, log)
    (cache.path / "meta.json").unlink()  # as if the process died before finishing
    _build(enc, ds, root, log)
    assert len(log) == 2


def test_corrupt_cache_is_rebuilt(setup):
    enc, ds, root = setup
    log: list = []
    cache = _build(enc, ds, root, log)
    meta = json.loads((cache.path / "meta.json").read_text())
    np.save(cache.path / "grid.npy", np.zeros((3, 1, 1), dtype=np.float32))  # wrong shape
    (cache.path / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(FeatureCacheWarning, match=r"grid.npy is \d+ bytes, 196736 were written"):  # named, then rebuilt
        rebuilt = _build(enc, ds, root, log)
    assert len(log) == 2 and rebuilt.grid.shape[0] == len(ds)


def test_stale_cache_is_not_used(setup):
    enc, ds, root = setup
    log: list = []
    first = _build(enc, ds, root, log)
    other = load_dataset("shapes", split="val", num_train=10, num_val=24, num_test=10, seed=1)  # other images
    second = _build(enc, other, root, log)
    assert len(log) == 2 and second.path != first.path
    enc2 = zoo.create_encoder("resnet10t", img_size=64, freeze=True)  # another transform
    third = _build(enc2, ds, root, log)
    assert len(log) == 3 and third.path not in (first.path, second.path)


def test_key_covers_the_weights_and_the_encoder_options(setup):
    """Two randomly initialised encoders of one name (other seeds) must not share features; the same
    weights again must; a timm option that changes the grid is part of the key."""
    enc, ds, root = setup
    log: list = []
    first = _build(enc, ds, root, log)
    torch.manual_seed(1)
    other_seed = zoo.create_encoder("resnet10t", img_size=48, freeze=True)
    second = _build(other_seed, ds, root, log)
    assert len(log) == 2 and second.path != first.path
    assert not np.allclose(first.pooled, second.pooled)
    torch.manual_seed(0)
    same = zoo.create_encoder("resnet10t", img_size=48, freeze=True)
    assert _build(same, ds, root, log).path == first.path and len(log) == 2
    torch.manual_seed(0)
    strided = zoo.create_encoder("resnet10t", img_size=48, freeze=True, output_stride=16)
    third = _build(strided, ds, root, log)
    assert len(log) == 3 and third.grid.shape[1] > first.grid.shape[1]


def test_two_builds_of_one_entry_at_once_do_not_collide(setup, monkeypatch):
    """Another process (another run sharing the cache, another node) builds the same entry while ours
    is half written: both must finish, and one valid entry remains, with no temporary folders."""
    enc, ds, root = setup
    theirs: list = []
    real_forward = enc.forward

    def forward_with_a_rival(images):
        if not theirs:  # our first batch: the rival starts and finishes its whole build now
            theirs.append(None)
            theirs[0] = get_or_build(enc, ds, root=root, batch_size=8, progress=False)
        return real_forward(images)

    monkeypatch.setattr(enc, "forward", forward_with_a_rival)
    ours = get_or_build(enc, ds, root=root, batch_size=8, progress=False)
    assert ours.path == theirs[0].path
    assert [p.name for p in root.iterdir()] == [ours.path.name]
    assert np.array_equal(np.asarray(ours.grid), np.asarray(theirs[0].grid))
