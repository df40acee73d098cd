"""On-disk cache of a frozen encoder's features for a data set.

Training a decoder on COCO means running a frozen backbone over the same 113k images every epoch; doing
it once and reading the features back is the usual way to train decoders fast. Each cache entry is a
folder holding two memory-mapped ``.npy`` arrays (grid (M, N, C) and pooled (M, C)) and a ``meta.json``
written **last**. It is keyed by everything that changes the features: encoder name and options, a
digest of its weights (so two randomly initialised encoders of different seeds never share features;
the same pretrained weights always do), image size/transform, the data set fingerprint (names, ids,
paths, captions) and the dtype.

A cache whose ``meta.json`` is missing (a run killed while writing), whose key differs, or whose arrays
have the wrong shape is stale or partial: it is rebuilt, never silently used. Every array file carries a
CRC-32 per 4 MiB block in ``meta.json``, checked when the entry is opened (at about 2 GB/s, a second or two
per GB; ``benchmarks/bench_feature_cache.py`` measures it against an epoch): an entry whose bytes changed
on disk (a bad sector, a stray write, a copy cut short) is named in a :class:`FeatureCacheWarning` with the
file and byte range, and rebuilt, so a decoder never trains on garbage.

The arrays are written with plain sequential writes into files whose full size is reserved first
(``posix_fallocate``), after checking the disk has room for them: a full disk is a
:class:`FeatureCacheError` saying how much is needed and what to do, never a bus error from a memory map
of a file the disk could not back. Each build writes into its
own temporary folder and renames it into place, so two processes building the same entry at once (two
runs sharing the cache, or the nodes of a multi-node job) never tread on each other: the first rename
wins and the other's copy is discarded. Memory-mapping keeps RAM
flat however large the data set is (COCO train with a 7×7×2048 grid in float16 is ~22 GB on disk, read
page by page).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import socket
import tempfile
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from zoo.contracts.features import Features
from zoo.data.datasets import ImageDataset
from zoo.errors import ZooError
from zoo.files import free_bytes

CACHE_FORMAT = 3  # 2: weights digest and encoder options in the key; 3: block checksums in meta.json
DTYPES = {"float32": np.float32, "float16": np.float16}
ARRAYS = ("grid.npy", "pooled.npy")
CHECKSUM_BLOCK = 4 << 20  # bytes per CRC-32 block: a damaged block is named to within 4 MiB
#: room kept free beyond an entry's own size (the file system's own blocks, meta.json, other writers)
SPACE_MARGIN = 1 << 20


class FeatureCacheError(ZooError):
    """A cache entry that cannot be written (a full disk): the message says how much room it needs and
    what to do instead."""


class FeatureCacheWarning(UserWarning):
    """A cache entry found damaged (named, with the file and bytes) and rebuilt."""


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


def _valid(folder: Path, key: dict[str, Any], verify: bool = False, warn: bool = True) -> CachedFeatures | None:
    """The entry in ``folder`` if it is complete, of ``key``, and (with ``verify``) every block of its
    arrays matches its checksum; else None, after a :class:`FeatureCacheWarning` (with ``warn``) naming what
    is damaged when the entry claimed to be complete (a missing or stale entry is rebuilt without a word)."""
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict) or meta.get("key") != key or not meta.get("complete"):
            return None
    except (OSError, ValueError):
        return None
    damage = damaged(folder, meta) if verify else None
    if damage is None:
        try:
            grid = np.load(folder / "grid.npy", mmap_mode="r")
            pooled = np.load(folder / "pooled.npy", mmap_mode="r")
            if grid.shape == tuple(meta["grid_shape"]) and pooled.shape == tuple(meta["pooled_shape"]):
                return CachedFeatures(grid, pooled, folder)
            damage = f"its arrays have shapes {grid.shape} and {pooled.shape}, meta.json says " \
                     f"{tuple(meta['grid_shape'])} and {tuple(meta['pooled_shape'])}"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            damage = f"its arrays cannot be read ({type(exc).__name__}: {exc})"
    if warn:
        warnings.warn(FeatureCacheWarning(f"feature cache entry {folder} is damaged: {damage}; it is rebuilt now"),
                      stacklevel=3)
    return None


def damaged(folder: Path, meta: dict[str, Any]) -> str | None:
    """What is wrong with the arrays of the entry in ``folder`` against the checksums in its ``meta``
    (the first damaged block of each file, by byte range), or None when every block matches. Reads each
    file once, in ``CHECKSUM_BLOCK`` pieces."""
    sums = meta.get("checksums")
    if not isinstance(sums, dict):
        return "meta.json holds no checksums"
    found = []
    for name in ARRAYS:
        want = sums.get(name)
        if not isinstance(want, dict) or not isinstance(want.get("crc32"), list):
            found.append(f"{name} has no checksums in meta.json")
            continue
        block = int(want.get("block", CHECKSUM_BLOCK))
        try:
            size = os.path.getsize(folder / name)
            if size != want.get("bytes"):
                found.append(f"{folder / name} is {size} bytes, {want.get('bytes')} were written")
                continue
            got = _block_crcs(folder / name, block)
        except OSError as exc:
            found.append(f"{folder / name} cannot be read ({exc.strerror or exc})")
            continue
        bad = next((i for i, (a, b) in enumerate(zip(got, want["crc32"])) if a != b), None)
        if bad is not None:
            end = min((bad + 1) * block, size) - 1
            found.append(f"{folder / name} bytes {bad * block}-{end} do not match their checksum")
    return "; ".join(found) or None


def _block_crcs(path: Path, block: int) -> list[int]:
    out = []
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(block)
        view = memoryview(buf)
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            out.append(zlib.crc32(view[:n]))
    return out


class _ArrayWriter:
    """One ``.npy`` file written front to back (rows in order) with plain writes into space reserved up
    front, its CRC-32 per ``CHECKSUM_BLOCK`` bytes kept as it goes. No memory map: on a disk that fills up,
    writing into a mapped page the disk cannot back kills the process with SIGBUS; a write() says ENOSPC."""

    def __init__(self, path: Path, dtype: Any, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.shape = path, np.dtype(dtype), tuple(shape)
        self.rows = 0
        self.crcs: list[int] = []
        self._crc, self._in_block = 0, 0
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buf, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape})
        header = buf.getvalue()
        self.bytes = len(header) + int(np.prod(self.shape)) * self.dtype.itemsize
        self._fh = open(path, "wb")
        try:
            if hasattr(os, "posix_fallocate"):
                try:  # reserve every block now: a full disk says so here, not half-way through
                    os.posix_fallocate(self._fh.fileno(), 0, self.bytes)
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # no fallocate there: written as we go
                        raise
            self._write(header)
        except BaseException:
            self._fh.close()
            raise

    def append(self, rows: np.ndarray) -> None:
        """The next rows, in order (the loader does not shuffle)."""
        data = np.ascontiguousarray(rows, dtype=self.dtype)
        assert data.shape[1:] == self.shape[1:], (data.shape, self.shape)
        self._write(memoryview(data).cast("B"))
        self.rows += len(data)

    def _write(self, data: Any) -> None:
        view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
        self._fh.write(view)
        while len(view):  # the running CRC of each CHECKSUM_BLOCK bytes of the file
            take = min(CHECKSUM_BLOCK - self._in_block, len(view))
            self._crc = zlib.crc32(view[:take], self._crc)
            self._in_block += take
            view = view[take:]
            if self._in_block == CHECKSUM_BLOCK:
                self.crcs.append(self._crc)
                self._crc, self._in_block = 0, 0

    def close(self) -> dict[str, Any]:
        """Flush to disk; returns the file's checksums for ``meta.json``."""
        assert self.rows == self.shape[0], f"{self.path}: {self.rows} of {self.shape[0]} rows written"
        if self._in_block:
            self.crcs.append(self._crc)
            self._crc, self._in_block = 0, 0
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        return {"bytes": self.bytes, "block": CHECKSUM_BLOCK, "crc32": self.crcs}

    def abort(self) -> None:
        self._fh.close()


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
    verify: bool = True,
) -> CachedFeatures:
    """The cached features of ``dataset`` under ``encoder``, computed now if absent, stale, partial or
    damaged. ``verify``: check an existing entry's block checksums first (one read of the entry; a
    damaged one is named in a :class:`FeatureCacheWarning` and rebuilt). A process that knows another one
    has just checked or built the entry (the other local ranks of ``torchrun``) may skip it."""
    if dtype not in DTYPES:
        raise ValueError(f"feature cache dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    tf = encoder.transform(train=False)
    key = cache_key(encoder, transform_id(tf), dataset.fingerprint(), dtype)
    folder = Path(root or default_cache_root()) / f"{encoder.name.replace('/', '_')}-{key_digest(key)}"
    hit = _valid(folder, key, verify=verify)
    if hit is not None:
        _touch(folder)
        return hit
    if on_build is not None:
        on_build(folder)
    writers: list[_ArrayWriter] = []
    was_training = encoder.training
    tmp: Path | None = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned(folder.parent, folder.name)  # what killed builds of this entry left behind
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + PARTIAL, dir=folder.parent))  # this build's own
        _write_owner(tmp)
        loader = torch.utils.data.DataLoader(
            ImageDataset(dataset, tf), batch_size=batch_size, shuffle=False, num_workers=num_workers,
            generator=torch.Generator(),  # leave the global RNG stream alone
        )
        encoder.eval()
        n = len(dataset)
        bar = tqdm(total=n, desc=f"caching {encoder.name} features", unit="img", disable=not progress)
        with torch.no_grad():
            for idx, images in loader:
                feats = encoder(images.to(device))
                g = feats.grid.float().cpu().numpy()
                p = feats.pooled.float().cpu().numpy()
                if not writers:  # the first batch tells the row shapes, so the entry's size: check the room
                    shapes = {"grid.npy": (n, *g.shape[1:]), "pooled.npy": (n, p.shape[1])}
                    _check_room(folder, shapes, dtype)
                    writers = [_ArrayWriter(tmp / name, DTYPES[dtype], shape) for name, shape in shapes.items()]
                assert int(idx[0]) == writers[0].rows, "the loader must keep the data set's order"
                for w, rows in zip(writers, (g, p)):
                    w.append(rows)
                bar.update(len(idx))
        bar.close()
        assert writers, "empty data set"
        sums = {w.path.name: w.close() for w in writers}
        grid_shape, pooled_shape = writers[0].shape, writers[1].shape
        writers = []
        meta = {"key": key, "complete": True, "grid_shape": list(grid_shape), "pooled_shape": list(pooled_shape),
                "checksums": sums,
                "about": {"encoder": encoder.name, "dataset": getattr(dataset, "name", None),
                          "split": getattr(dataset, "split", None), "images": n, "dtype": dtype,
                          "created": time.time()}}  # for `zoo cache list`; not part of the key
        (tmp / OWNER).unlink(missing_ok=True)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        _install(tmp, folder, key)
    except OSError as exc:  # a full disk, a folder that cannot be written: said, and nothing left behind
        raise _no_room(folder, exc) from exc
    finally:
        for w in writers:
            w.abort()
        encoder.train(was_training)
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    hit = _valid(folder, key)
    if hit is None:
        raise RuntimeError(f"feature cache {folder} is not readable right after it was written")
    return hit


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _advice(folder: Path) -> str:
    return (f"Free some space there (`zoo cache prune` removes old entries), point $ZOO_FEATURE_CACHE at a disk "
            f"with room, use --set train.cache_dtype=float16 (half the size), or --set train.cache_features=false "
            f"(the encoder runs in the loop: slower, no cache). Nothing of the entry {folder.name} was left behind.")


def _check_room(folder: Path, shapes: dict[str, tuple[int, ...]], dtype: str) -> None:
    """Refuse, before writing, an entry the disk holding the cache has no room for."""
    need = sum(int(np.prod(shape)) * np.dtype(DTYPES[dtype]).itemsize + 128 for shape in shapes.values())
    free = free_bytes(folder.parent)
    if free is not None and free < need + SPACE_MARGIN:
        raise FeatureCacheError(
            f"no room for feature cache entry {folder}: it needs {_human(need)} ({shapes['grid.npy'][0]} images, "
            f"{dtype}), and the disk holding {folder.parent} has {_human(free)} free. {_advice(folder)}"
        )


def _no_room(folder: Path, exc: OSError) -> ZooError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return FeatureCacheError(f"the disk filled up while writing feature cache entry {folder} "
                                 f"({exc.strerror}). {_advice(folder)}")
    return FeatureCacheError(f"cannot write feature cache entry {folder}: {exc.strerror or exc} "
                             f"({exc.filename or folder}). Nothing of it was left behind.")


def _install(tmp: Path, folder: Path, key: dict[str, Any]) -> None:
    """Rename the finished build ``tmp`` to ``folder``. A stale or partial ``folder`` is moved aside
    first; if another process installed a valid one meanwhile, keep theirs (ours is discarded)."""
    for _ in range(3):
        try:
            os.replace(tmp, folder)  # atomic; fails if ``folder`` exists and is not empty
            return
        except OSError:
            if _valid(folder, key, verify=True, warn=False) is not None:
                return  # someone else's identical build won the race (checked: not the damaged entry we replace)
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
