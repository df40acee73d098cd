"""On-disk cache of a frozen encoder's features for a data set.

Training a decoder on COCO means running a frozen backbone over the same 113k images every epoch; doing
it once and reading the features back is the usual way to train decoders fast. Each cache entry is a
folder holding two memory-mapped ``.npy`` arrays (grid (M, N, C) and pooled (M, C)) and a ``meta.json``
written **last**. It is keyed by everything that changes the features: encoder name and options, a
digest of its weights (so two randomly initialised encoders of different seeds never share features;
the same pretrained weights always do), image size/transform, the data set fingerprint (names, ids,
paths, captions) and the dtype.

A cache whose ``meta.json`` is missing (a run killed while writing), whose key differs, or whose arrays
have the wrong shape is stale or partial: it is rebuilt, never silently used. Each build writes into its
own temporary folder and renames it into place, so two processes building the same entry at once (two
runs sharing the cache, or the nodes of a multi-node job) never tread on each other: the first rename
wins and the other's copy is discarded. Memory-mapping keeps RAM
flat however large the data set is (COCO train with a 7×7×2048 grid in float16 is ~22 GB on disk, read
page by page).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from zoo.features import Features

CACHE_FORMAT = 2  # 2: weights digest and encoder options in the key
DTYPES = {"float32": np.float32, "float16": np.float16}


def default_cache_root() -> Path:
    return Path(os.environ.get("ZOO_FEATURE_CACHE", Path.home() / ".cache" / "caption-zoo" / "features"))


def cache_key(encoder: Any, transform_id: str, dataset_fingerprint: str, dtype: str) -> dict[str, Any]:
    options = {k: v for k, v in encoder.config().items() if k != "freeze"}  # freezing changes no feature
    return {
        "format": CACHE_FORMAT,
        "encoder": encoder.name,
        "options": options,
        "weights": encoder.weights_id(),
        "weights_digest": weights_digest(encoder),
        "transform": transform_id,
        "dataset": dataset_fingerprint,
        "dtype": dtype,
    }


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer (names, shapes, dtypes, bytes): what the features depend
    on, whatever the weights' source says about itself. About a second per GB of weights."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class CachedFeatures:
    """Features of every image of a data set, memory-mapped; ``batch(idx)`` gives a ``Features``."""

    grid: np.ndarray
    pooled: np.ndarray
    path: Path

    def __len__(self) -> int:
        return self.grid.shape[0]

    def batch(self, index: torch.Tensor | np.ndarray | list[int], device: torch.device | str = "cpu") -> Features:
        idx = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64)
        grid = torch.from_numpy(np.ascontiguousarray(self.grid[idx])).float()
        pooled = torch.from_numpy(np.ascontiguousarray(self.pooled[idx])).float()
        return Features(grid.to(device), pooled.to(device))


def _valid(folder: Path, key: dict[str, Any]) -> CachedFeatures | None:
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != key or not meta.get("complete"):
            return None
        grid = np.load(folder / "grid.npy", mmap_mode="r")
        pooled = np.load(folder / "pooled.npy", mmap_mode="r")
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    if grid.shape != tuple(meta["grid_shape"]) or pooled.shape != tuple(meta["pooled_shape"]):
        return None
    return CachedFeatures(grid, pooled, folder)


def transform_id(transform: Any) -> str:
    """A stable description of an image transform (its repr lists sizes, crop, mean and std)."""
    return hashlib.sha256(repr(transform).encode()).hexdigest()[:16]


def get_or_build(
    encoder: Any,
    dataset: Any,
    *,
    root: str | Path | None = None,
    dtype: str = "float32",
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_build: Callable[[Path], None] | None = None,
) -> CachedFeatures:
    """The cached features of ``dataset`` under ``encoder``, computed now if absent, stale or partial."""
    from zoo.data import ImageDataset

    if dtype not in DTYPES:
        raise ValueError(f"feature cache dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    tf = encoder.transform(train=False)
    key = cache_key(encoder, transform_id(tf), dataset.fingerprint(), dtype)
    folder = Path(root or default_cache_root()) / f"{encoder.name.replace('/', '_')}-{key_digest(key)}"
    hit = _valid(folder, key)
    if hit is not None:
        return hit
    if on_build is not None:
        on_build(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".partial-", dir=folder.parent))  # this build's own
    loader = torch.utils.data.DataLoader(
        ImageDataset(dataset, tf), batch_size=batch_size, shuffle=False, num_workers=num_workers,
        generator=torch.Generator(),  # leave the global RNG stream alone
    )
    grid_mm = pooled_mm = None
    was_training = encoder.training
    encoder.eval()
    n = len(dataset)
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"caching {encoder.name} features", unit="img", disable=not progress)
        with torch.no_grad():
            for idx, images in loader:
                feats = encoder(images.to(device))
                g = feats.grid.float().cpu().numpy()
                p = feats.pooled.float().cpu().numpy()
                if grid_mm is None:
                    grid_mm = np.lib.format.open_memmap(tmp / "grid.npy", mode="w+", dtype=DTYPES[dtype], shape=(n, *g.shape[1:]))
                    pooled_mm = np.lib.format.open_memmap(tmp / "pooled.npy", mode="w+", dtype=DTYPES[dtype], shape=(n, p.shape[1]))
                i = idx.numpy()
                grid_mm[i] = g
                pooled_mm[i] = p
                bar.update(len(i))
        bar.close()
        assert grid_mm is not None and pooled_mm is not None, "empty data set"
        grid_mm.flush()
        pooled_mm.flush()
        meta = {"key": key, "complete": True, "grid_shape": list(grid_mm.shape), "pooled_shape": list(pooled_mm.shape)}
        del grid_mm, pooled_mm
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        _install(tmp, folder, key)
    finally:
        encoder.train(was_training)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    hit = _valid(folder, key)
    if hit is None:
        raise RuntimeError(f"feature cache {folder} is not readable right after it was written")
    return hit


def _install(tmp: Path, folder: Path, key: dict[str, Any]) -> None:
    """Rename the finished build ``tmp`` to ``folder``. A stale or partial ``folder`` is moved aside
    first; if another process installed a valid one meanwhile, keep theirs (ours is discarded)."""
    for _ in range(3):
        try:
            os.replace(tmp, folder)  # atomic; fails if ``folder`` exists and is not empty
            return
        except OSError:
            if _valid(folder, key) is not None:
                return  # someone else's identical build won the race
            stale = Path(tempfile.mkdtemp(prefix=folder.name + ".stale-", dir=folder.parent))
            try:
                os.replace(folder, stale / "old")
            except FileNotFoundError:
                pass
            shutil.rmtree(stale, ignore_errors=True)
    os.replace(tmp, folder)
