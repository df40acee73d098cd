"""The feature cache: reused when valid, rebuilt when stale or partial, equal to the encoder's output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import zoo
from zoo.data import ImageDataset, load_dataset
from zoo.feature_cache import get_or_build


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
