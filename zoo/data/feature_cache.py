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
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from zoo.contracts.features import Features
from zoo.data.datasets import ImageDataset

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
    if dtype not in DTYPES:
        raise ValueError(f"feature cache dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    tf = encoder.transform(train=False)
    key = cache_key(encoder, transform_id(tf), dataset.fingerprint(), dtype)
    folder = Path(root or default_cache_root()) / f"{encoder.name.replace('/', '_')}-{key_digest(key)}"
    hit = _valid(folder, key)
    if hit is not None:
        _touch(folder)
        return hit
    if on_build is not None:
        on_build(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(folder.parent, folder.name)  # what killed builds of this entry left behind
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + PARTIAL, dir=folder.parent))  # this build's own
    _write_owner(tmp)
    loader = torch.utils.data.DataLoader(
        ImageDataset(dataset, tf), batch_size=batch_size, shuffle=False, num_workers=num_workers,
        generator=torch.Generator(),  # leave the global RNG stream alone
    )
    grid_mm = pooled_mm = None
    was_training = encoder.training
    encoder.eval()
    n = len(dataset)
    try:
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
        meta = {"key": key, "complete": True, "grid_shape": list(grid_mm.shape), "pooled_shape": list(pooled_mm.shape),
                "about": {"encoder": encoder.name, "dataset": getattr(dataset, "name", None),
                          "split": getattr(dataset, "split", None), "images": n, "dtype": dtype,
                          "created": time.time()}}  # for `zoo cache list`; not part of the key
        del grid_mm, pooled_mm
        (tmp / OWNER).unlink(missing_ok=True)
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
            stale = Path(tempfile.mkdtemp(prefix=folder.name + STALE, dir=folder.parent))
            try:
                os.replace(folder, stale / "old")
            except FileNotFoundError:
                pass
            shutil.rmtree(stale, ignore_errors=True)
    os.replace(tmp, folder)


# -- abandoned builds and cache housekeeping (``zoo cache``) ---------------------------------------------
PARTIAL = ".partial-"  # a build in progress: ``<entry>.partial-XXXX``, renamed to ``<entry>`` when complete
STALE = ".stale-"  # an old entry being removed
OWNER = "owner.json"  # in a partial folder: who builds it (pid, host, process start, boot)
#: a partial folder whose owner cannot be checked from here (another host on a shared file system, or no
#: owner file) counts as abandoned once nothing in it has changed for this long
ABANDONED_AFTER_S = 24 * 3600.0


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), so a reused pid is not taken for
    the builder; None where /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "boot": _boot_id(),
            "process_start": _process_start(os.getpid()), "started": time.time()}


def _write_owner(tmp: Path) -> None:
    (tmp / OWNER).write_text(json.dumps(_owner()))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    return True


def _newest_change(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    for p in folder.iterdir():
        try:
            times.append(p.stat().st_mtime)
        except OSError:
            pass
    return max(times)


def is_live_build(folder: Path, now: float | None = None) -> bool:
    """Whether the partial build in ``folder`` may still be running. Its owner file names the process: on
    this host (same boot), live exactly when that process exists and started when the build's did; from
    another host, or with no owner file (a build killed before writing it, or one from an older zoo),
    live until nothing in it has changed for ``ABANDONED_AFTER_S``."""
    now = time.time() if now is None else now
    try:
        owner = json.loads((folder / OWNER).read_text())
        if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
            raise ValueError(owner)
    except (OSError, ValueError):
        owner = None
    if owner is not None and owner.get("host") == socket.gethostname():
        if owner.get("boot") and _boot_id() and owner["boot"] != _boot_id():
            return False  # the machine restarted since
        if not _pid_alive(owner["pid"]):
            return False
        started = owner.get("process_start")
        return started is None or _process_start(owner["pid"]) in (None, started)
    try:
        return now - _newest_change(folder) < ABANDONED_AFTER_S
    except OSError:
        return False


def remove_abandoned(root: str | Path, entry: str | None = None, dry_run: bool = False) -> list[Path]:
    """Remove what builds that died left in ``root``: partial folders whose builder is gone
    (:func:`is_live_build`) and old entries half-way through removal; only those of ``entry`` when given.
    A live build's folder is never touched. Returns the folders removed (or, with ``dry_run``, that would be)."""
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    for p in sorted(root.iterdir()):
        name = p.name
        if not p.is_dir() or (entry is not None and not name.startswith(entry + ".")):
            continue
        if (PARTIAL in name and not is_live_build(p)) or STALE in name:
            removed.append(p)
            if not dry_run:
                shutil.rmtree(p, ignore_errors=True)
    return removed


def _touch(folder: Path) -> None:
    """Record a use of an entry (``zoo cache list`` shows it; ``prune --older-than`` goes by it)."""
    try:
        os.utime(folder / "meta.json")
    except OSError:
        pass  # a read-only cache is still usable


@dataclass
class CacheEntry:
    """One folder of the cache, for ``zoo cache list`` and ``prune``."""

    path: Path
    state: str  # complete, building (a live partial build), abandoned (a dead build's leftovers), unreadable
    size: int  # bytes
    last_used: float  # seconds since the epoch: a complete entry's last use, else its last change
    encoder: str | None = None
    dataset: str | None = None
    split: str | None = None
    images: int | None = None
    dtype: str | None = None

    @property
    def name(self) -> str:
        return self.path.name


def _size(folder: Path) -> int:
    total = 0
    for p in folder.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def list_entries(root: str | Path | None = None) -> list[CacheEntry]:
    """Every folder in the cache (default root: ``default_cache_root()``), complete or not, by name."""
    root = Path(root or default_cache_root())
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        if not p.is_dir():
            continue
        if PARTIAL in p.name or STALE in p.name:
            state = "building" if PARTIAL in p.name and is_live_build(p) else "abandoned"
            out.append(CacheEntry(p, state, _size(p), _newest_change(p)))
            continue
        try:
            meta = json.loads((p / "meta.json").read_text())
            about = meta.get("about") or {}
            key = meta.get("key") or {}
            used = (p / "meta.json").stat().st_mtime
        except (OSError, ValueError, AttributeError):
            out.append(CacheEntry(p, "unreadable", _size(p), p.stat().st_mtime))
            continue
        out.append(CacheEntry(
            p, "complete" if meta.get("complete") else "unreadable", _size(p), used,
            encoder=about.get("encoder") or key.get("encoder"), dataset=about.get("dataset"),
            split=about.get("split"), images=about.get("images") or (meta.get("grid_shape") or [None])[0],
            dtype=about.get("dtype") or key.get("dtype"),
        ))
    return out


def remove_entry(entry: CacheEntry) -> None:
    """Delete one cache folder: renamed aside first (one atomic step), so no reader ever sees it half gone."""
    if entry.state == "building":
        raise ValueError(f"{entry.path} is a build in progress; it is not removed")
    aside = entry.path.with_name(entry.path.name + STALE + "removing")
    try:
        os.replace(entry.path, aside)
    except OSError:
        aside = entry.path
    shutil.rmtree(aside, ignore_errors=True)
