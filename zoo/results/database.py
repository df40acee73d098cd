"""The results database: one SQLite row per evaluation, so every score keeps what produced it.

Why SQLite (standard library) and not JSON files: two ``zoo eval`` processes may finish at the same moment
(a sweep on one machine); SQLite's locking lets both rows land, and WAL mode lets ``zoo leaderboard`` read
while a writer is busy. Each row records the model (names, options, config hash, parameter counts), the data
(set, split, image count, a hash of the reference captions), the decoding settings, every metric on
pycocoevalcap's own 0–1 scale (CIDEr-D 0–10), per-image CIDEr-D (for the paired bootstrap) and the
generated caption of every image (for the leaderboard page's drill-down), throughput, device, package
versions, git commit, seed, time and the checkpoint's path and sha256. A second table, ``images``, holds
what is shared by every row scored on one reference set: each image's reference captions and a small JPEG
thumbnail, stored once per (reference set, image) whoever evaluated first.

Location: ``--db PATH``, else ``$ZOO_RESULTS_DB``, else ``DEFAULT_DB``.

Schema versions live in ``PRAGMA user_version``; ``_MIGRATIONS[i]`` brings a database from version ``i``
to ``i + 1`` inside one write transaction, so a half-migrated file cannot exist. A file from a newer
caption-zoo is refused rather than misread.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import random
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

from zoo.errors import ZooError

DEFAULT_DB = "~/.local/share/caption-zoo/results.sqlite"
DB_ENV = "ZOO_RESULTS_DB"
SCHEMA_VERSION = 3
# 'CZoo' as a 32-bit big-endian integer: marks the file as ours, so a foreign SQLite file is not "migrated".
APPLICATION_ID = 0x435A6F6F
BUSY_TIMEOUT_S = 30.0
LOCK_RETRY_S = 120.0

T = TypeVar("T")


class ResultsDBError(ZooError):
    """A results database that cannot be opened, read or written (the message names the file)."""


# -- the record ------------------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(kw_only=True)
class EvalRecord:
    """One evaluation of one model on one split with one decoding setting.

    Metrics are on pycocoevalcap's scale (0–1; CIDEr-D 0–10), never ×100: the leaderboard multiplies for
    display. ``per_image_cider`` maps image id (as a string) to that image's CIDEr-D; its mean is the
    corpus CIDEr-D, and it is what the paired bootstrap resamples. ``captions`` maps the same ids to the
    generated captions (empty on rows recorded before schema version 2). ``references_hash`` (see
    ``references_hash()``) identifies the reference captions: only rows with equal data, split and
    references hash are ranked together. ``id`` is set on rows read back from the database.
    """

    system: str
    encoder: str
    decoder: str
    tokenizer: str
    config_hash: str
    data: str
    split: str
    references_hash: str
    metrics: dict[str, float]
    encoder_options: dict[str, Any] = field(default_factory=dict)
    decoder_options: dict[str, Any] = field(default_factory=dict)
    tokenizer_options: dict[str, Any] = field(default_factory=dict)
    params_encoder: int = 0
    params_decoder: int = 0
    num_images: int = 0
    decoding: dict[str, Any] = field(default_factory=dict)
    per_image_cider: dict[str, float] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    train_images_per_s: float | None = None
    decode_images_per_s: float | None = None
    device: str = ""
    versions: dict[str, Any] = field(default_factory=dict)
    git_commit: str | None = None
    seed: int | None = None
    created_at: str = field(default_factory=_now)
    checkpoint_path: str | None = None
    checkpoint_sha256: str | None = None
    run_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: how the model was trained: the objective's signature (``zoo.models.checkpoint.objective_signature``), e.g.
    #: ``scst(cider-d, baseline=mean, n=5, df=train, eos=yes)``; ``xe`` for cross-entropy
    objective: str = "xe"
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EvalRecord":
        """The inverse of ``to_dict`` (e.g. a row shared as JSON); unknown keys are refused by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ResultsDBError(f"evaluation record: unknown key {unknown[0]!r}; known keys are {sorted(known)}")
        try:
            return cls(**dict(d))
        except TypeError as exc:
            raise ResultsDBError(f"evaluation record: {exc}") from exc

    def validate(self) -> None:
        """Refuse a row that would mislead the leaderboard later: a ×100 metric, a non-finite score, a
        per-image table that does not match the image count, a value JSON cannot hold."""
        for name in ("system", "encoder", "decoder", "tokenizer", "config_hash", "data", "split", "references_hash",
                     "objective"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ResultsDBError(f"evaluation record: field {name!r} must be a non-empty string, got {value!r}")
        if not self.metrics:
            raise ResultsDBError(f"evaluation record {self.system!r}: 'metrics' is empty; record at least CIDEr-D")
        for key, value in self.metrics.items():
            _check_finite(f"metrics[{key!r}]", value, self.system)
            limit = 10.0 if key.lower().startswith("cider") else 1.0
            if value > limit + 1e-9 or value < 0:
                raise ResultsDBError(
                    f"evaluation record {self.system!r}: metrics[{key!r}] = {value} is outside pycocoevalcap's "
                    f"0–{limit:g} scale. Record raw scores (e.g. 0.352), not ×100 (35.2)."
                )
        for key, value in self.per_image_cider.items():
            if not isinstance(key, str):
                raise ResultsDBError(
                    f"evaluation record {self.system!r}: per_image_cider keys must be image ids as strings, "
                    f"got {key!r} ({type(key).__name__}); use str(image_id)"
                )
            _check_finite(f"per_image_cider[{key!r}]", value, self.system)
        for key, value in self.captions.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ResultsDBError(
                    f"evaluation record {self.system!r}: captions must map image ids (strings) to captions "
                    f"(strings), got {key!r}: {value!r}; use str(image_id)"
                )
        if self.captions and len(self.captions) != self.num_images:
            raise ResultsDBError(
                f"evaluation record {self.system!r}: captions has {len(self.captions)} entries but num_images "
                f"is {self.num_images}; they must describe the same images"
            )
        if self.per_image_cider and len(self.per_image_cider) != self.num_images:
            raise ResultsDBError(
                f"evaluation record {self.system!r}: per_image_cider has {len(self.per_image_cider)} scores "
                f"but num_images is {self.num_images}; they must describe the same images"
            )
        for name in ("train_images_per_s", "decode_images_per_s"):
            value = getattr(self, name)
            if value is not None:
                _check_finite(name, value, self.system)
        for name in ("encoder_options", "decoder_options", "tokenizer_options", "decoding", "versions", "extra"):
            _json(getattr(self, name), f"evaluation record {self.system!r}: field {name!r}")


def _check_finite(what: str, value: Any, system: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ResultsDBError(f"evaluation record {system!r}: {what} must be a finite number, got {value!r}")


def _json(value: Any, what: str) -> str:
    """Canonical JSON (sorted keys), so equal settings compare equal as text."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ResultsDBError(f"{what} cannot be stored as JSON: {exc}") from exc


# -- hashes and environment ------------------------------------------------------------------------------
_PARTS = ("encoder", "decoder", "tokenizer")
# labels that name how a model was asked for, not what it is (a recipe's options are in its parts already)
_NOT_HASHED = ("recipe",)


def full_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` (a ``CaptionModel.config``) with every part's options completed by its factory's
    defaults, as ``zoo info`` shows them (the registry's ``Entry.user_options()``), so a model built with
    ``dropout=0.3`` spelled out and one that left the default have the same full config. Options given
    win over defaults; a part whose name is not registered here keeps the options it has. A mapping
    without parts (``{"encoder": {"name": ..., "kwargs": ...}, ...}``) is returned as it is."""
    out = dict(config)
    parts = [p for p in _PARTS if isinstance(out.get(p), Mapping) and isinstance(out[p].get("name"), str)]
    if not parts:
        return out
    from zoo.errors import UnknownNameError
    from zoo.registry.manager import get_registry

    registry = get_registry()
    for part in parts:
        spec = dict(out[part])
        try:
            defaults, _required = registry.get(part, spec["name"]).user_options()
        except UnknownNameError:
            defaults = {}
        spec["kwargs"] = {**defaults, **dict(spec.get("kwargs") or {})}
        out[part] = spec
    return out


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 of the full model config as canonical JSON: two rows with the same hash are the same system
    (up to seed). The config is completed first (:func:`full_config`: every option the factory defaults,
    filled in), so equal models hash equal however their options were spelled, and the ``recipe`` label
    is left out (a recipe's options are in the parts). Non-JSON values are hashed through ``str`` so the
    hash never fails on an odd option.

    Rows recorded before defaults were filled in keep the hash they were stored with; re-record them
    (``zoo eval`` again) to pool them with newer rows of the same model."""
    full = full_config(config)
    if any(p in full for p in _PARTS):
        full = {k: v for k, v in full.items() if k not in _NOT_HASHED}
    text = json.dumps(full, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_identity(checkpoint: str | Path) -> dict[str, str]:
    """What a checkpoint says about the training run that wrote it, for a row's ``extra``: ``run_id`` (one
    per ``zoo train`` run, the same in its best and last files) and ``train_hash`` (its training settings
    without the seed). Empty for a file written otherwise or before these were recorded; the leaderboard
    then falls back to seeds and file names, as before."""
    from zoo.models.checkpoint import read_extra

    try:
        run = read_extra(checkpoint).get("run")
    except (AttributeError, ValueError, ZooError):
        return {}
    if not isinstance(run, dict):
        return {}
    found = {"run_id": run.get("id"), "train_hash": run.get("train_hash")}
    return {k: v for k, v in found.items() if isinstance(v, str) and v}


def references_hash(refs: Mapping[Any, Iterable[str]]) -> str:
    """sha256 of a reference set: image ids and their captions, order-independent.

    CIDEr-D's document frequencies come from the references being scored, so scores are only comparable
    on the very same reference set; a changed caption or a missing image changes this hash."""
    canon = sorted((str(image_id), sorted(str(c) for c in caps)) for image_id, caps in refs.items())
    text = json.dumps(canon, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe_device(device: str | None = None) -> str:
    """A human description of where a run happened, e.g. ``cuda:0 (NVIDIA H200)`` or ``cpu (… , 16 cores)``."""
    if device is None or str(device).startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available() and (device is None or str(device).startswith("cuda")):
                dev = torch.device(device or "cuda")
                index = dev.index if dev.index is not None else torch.cuda.current_device()
                return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
        except Exception:  # noqa: BLE001 - a description must never fail an evaluation
            pass
        if device is None:
            device = "cpu"
    if str(device) == "cpu":
        return f"cpu ({_cpu_name()}, {os.cpu_count()} cores)"
    return str(device)


def _git(args: list[str], cwd: str | Path | None) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment_info(device: str | None = None, cwd: str | Path | None = None) -> dict[str, Any]:
    """Versions (zoo, torch, timm, python, numpy), the device and the git commit of ``cwd`` (None outside
    a repository or without git); ``git_dirty`` says whether tracked files had uncommitted changes, since
    a commit alone then does not reproduce the number."""
    from zoo.version import __version__

    commit = _git(["rev-parse", "HEAD"], cwd)
    dirty = None
    if commit:
        status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
        dirty = bool(status) if status is not None else None
    return {
        "versions": {
            "zoo": __version__,
            "torch": _dist_version("torch"),
            "timm": _dist_version("timm"),
            "numpy": _dist_version("numpy"),
            "python": platform.python_version(),
        },
        "device": describe_device(device),
        "git_commit": commit,
        "git_dirty": dirty,
    }


# -- location ----------------------------------------------------------------------------------------------
def default_db_path() -> Path:
    """``$ZOO_RESULTS_DB`` if set, else ``DEFAULT_DB`` (``~`` expanded)."""
    return Path(os.environ.get(DB_ENV) or DEFAULT_DB).expanduser()


def resolve_db_path(path: str | Path | None) -> Path:
    return Path(path).expanduser() if path else default_db_path()


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    """The shared ``--db`` option, so ``zoo eval``, ``zoo leaderboard`` and ``zoo compare`` say the same."""
    parser.add_argument(
        "--db",
        default=None,
        metavar="PATH",
        help=f"results database (default: ${DB_ENV} if set, else {DEFAULT_DB})",
    )


# -- schema ------------------------------------------------------------------------------------------------
_V1 = (
    """CREATE TABLE evaluations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL,
        system TEXT NOT NULL,
        run_name TEXT,
        encoder TEXT NOT NULL,
        decoder TEXT NOT NULL,
        tokenizer TEXT NOT NULL,
        encoder_options TEXT NOT NULL,
        decoder_options TEXT NOT NULL,
        tokenizer_options TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        params_encoder INTEGER NOT NULL,
        params_decoder INTEGER NOT NULL,
        data TEXT NOT NULL,
        split TEXT NOT NULL,
        num_images INTEGER NOT NULL,
        references_hash TEXT NOT NULL,
        decoding TEXT NOT NULL,
        metrics TEXT NOT NULL,
        per_image_cider TEXT NOT NULL,
        train_images_per_s REAL,
        decode_images_per_s REAL,
        device TEXT NOT NULL,
        versions TEXT NOT NULL,
        git_commit TEXT,
        seed INTEGER,
        checkpoint_path TEXT,
        checkpoint_sha256 TEXT,
        extra TEXT NOT NULL
    )""",
    "CREATE INDEX evaluations_board ON evaluations (data, split, references_hash)",
    "CREATE INDEX evaluations_config ON evaluations (config_hash)",
)

# version 2: every row's generated captions (image id → caption; '{}' on older rows), and the images of
# each reference set (references and a JPEG thumbnail, shared by all rows scored on it) for the drill-down
_V2_CAPTIONS_AND_IMAGES = (
    "ALTER TABLE evaluations ADD COLUMN captions TEXT NOT NULL DEFAULT '{}'",
    """CREATE TABLE images (
        references_hash TEXT NOT NULL,
        image_id TEXT NOT NULL,
        refs TEXT NOT NULL,
        thumbnail BLOB,
        PRIMARY KEY (references_hash, image_id)
    )""",
)

# version 3: the training objective's signature; rows recorded before were all trained with cross-entropy
_V3_OBJECTIVE = ("ALTER TABLE evaluations ADD COLUMN objective TEXT NOT NULL DEFAULT 'xe'",)

# _MIGRATIONS[i]: the statements that take a database from schema version i to i + 1 (0 = empty file).
_MIGRATIONS: list[tuple[str, ...]] = [_V1, _V2_CAPTIONS_AND_IMAGES, _V3_OBJECTIVE]
assert len(_MIGRATIONS) == SCHEMA_VERSION

_JSON_FIELDS = (
    "encoder_options",
    "decoder_options",
    "tokenizer_options",
    "decoding",
    "metrics",
    "per_image_cider",
    "captions",
    "versions",
    "extra",
)
_COLUMNS = tuple(f.name for f in dataclasses.fields(EvalRecord) if f.name != "id")
FILTERS = (
    "id",
    "system",
    "run_name",
    "encoder",
    "decoder",
    "tokenizer",
    "config_hash",
    "data",
    "split",
    "references_hash",
    "seed",
    "git_commit",
    "checkpoint_sha256",
    "device",
    "objective",
)


#: what to do about a results database that cannot be written (said by every such error)
WRITE_ADVICE = "Pass --db with a path you can write (or set $ZOO_RESULTS_DB)"


def _cannot_write(exc: BaseException) -> bool:
    cause = exc.__cause__
    text = str(cause).lower() if isinstance(cause, sqlite3.Error) else ""
    return "readonly" in text or "unable to open" in text


def _read_only_text(path: Path) -> str:
    """Where the read-only part is, in words: " (the file system at X is mounted read-only)", " (folder
    X cannot be written)", or "" when nothing here says so (root ignores permissions; SQLite still may)."""
    folder = path.parent if path.parent.exists() else next((p for p in path.parents if p.exists()), path.parent)
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f" (the file system holding {folder} is mounted read-only)"
    except (OSError, AttributeError):
        pass
    if path.exists() and not os.access(path, os.W_OK):
        return f" (the file {path} is not writable)"
    if not os.access(folder, os.W_OK):
        return f" (the folder {folder} cannot be written)"
    return ""


def check_writable(path: str | Path | None, otherwise: str = "") -> Path:
    """That the results database at ``path`` (``--db``; default: ``default_db_path()``) can be created or
    opened, is ours, and can be written: call it before the work whose result is to be recorded. Returns
    the resolved path; raises ResultsDBError saying what to do (another ``--db``, and ``otherwise``: what
    else the command offers, e.g. "or pass --no-record ...")."""
    try:
        with ResultsDB(path) as db:
            db.check_writable()
            return db.path
    except ResultsDBError as exc:
        if not otherwise:
            raise
        raise ResultsDBError(f"{exc}; {otherwise}") from exc


def _is_locked(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class ResultsDB:
    """The results database at ``path`` (default: ``default_db_path()``), created and migrated on open.

    ``create=False`` refuses a missing file instead of creating one (``zoo leaderboard`` uses it, so a
    mistyped ``--db`` says so rather than showing an empty board). Usable as a context manager."""

    def __init__(self, path: str | Path | None = None, create: bool = True):
        self.path = resolve_db_path(path)
        self.read_only = False  # True when opened for reading only (a database in a read-only place)
        if self.path.is_dir():
            raise ResultsDBError(f"results database {self.path} is a folder; pass --db with a file path")
        if not self.path.exists():
            if not create:
                raise ResultsDBError(
                    f"no results database at {self.path}. Run `zoo eval` first (it records there), or pass "
                    f"--db PATH / set {DB_ENV}."
                )
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ResultsDBError(
                    f"cannot create the folder for results database {self.path}: {exc}{_read_only_text(self.path)}. "
                    f"{WRITE_ADVICE}"
                ) from exc
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            where = _read_only_text(self.path)
            raise ResultsDBError(
                f"cannot open results database {self.path}: {exc}"
                + (f"; cannot write it: it is read-only{where}. {WRITE_ADVICE}" if where else "")
            ) from exc
        try:
            self._open()
        except ResultsDBError as exc:
            self._conn.close()
            if create or not _cannot_write(exc):
                raise
            self._open_read_only()  # reading (zoo leaderboard) a database that cannot be written here
        except BaseException:
            self._conn.close()
            raise

    def _open_read_only(self) -> None:
        """Open for reading only, as SQLite does for read-only media: ``mode=ro`` first; a WAL-mode file
        whose folder cannot hold the ``-shm``/``-wal`` files SQLite needs even to read is opened with
        ``immutable=1`` (nobody can be writing it through a folder that cannot be written)."""
        from urllib.parse import quote

        uri = "file:" + quote(str(self.path.resolve()))
        last: Exception | None = None
        for query in ("mode=ro", "immutable=1"):
            self._conn = sqlite3.connect(f"{uri}?{query}", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                version, app_id, tables = self._guarded(lambda: self._retry(self._inspect_snapshot))
            except ResultsDBError as exc:
                self._conn.close()
                last = exc
                continue
            self._check_version(version)
            self._check_ours(version, app_id, tables)
            if version < SCHEMA_VERSION:
                self._conn.close()
                raise ResultsDBError(
                    f"results database {self.path} has schema version {version} and cannot be upgraded to "
                    f"{SCHEMA_VERSION} here: it is read-only{_read_only_text(self.path)}. Open it once where it "
                    f"can be written (any `zoo eval` or `zoo leaderboard` there upgrades it), or copy it elsewhere."
                )
            self.read_only = True
            return
        assert last is not None
        raise last

    def check_writable(self) -> None:
        """Take the write lock and write the header back unchanged, then roll back: what recording a row
        needs, tried before the work whose result it records (``zoo eval`` decodes for minutes). A file
        or folder that cannot be written is a ResultsDBError that says "cannot write" and what to do."""
        version = self.schema_version

        def probe() -> None:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(f"PRAGMA user_version = {int(version)}")
            finally:
                self._rollback()

        if self.read_only:
            raise ResultsDBError(f"cannot write results database {self.path}: it is read-only{_read_only_text(self.path)}. {WRITE_ADVICE}")
        self._guarded(lambda: self._retry(probe))

    # -- opening ---------------------------------------------------------------------------------------
    def _open(self) -> None:
        version, app_id, tables = self._guarded(lambda: self._retry(self._inspect_snapshot))
        self._check_version(version)
        self._check_ours(version, app_id, tables)
        # WAL: readers do not block the writer and vice versa. It needs a write; a read-only file or a file
        # system without shared memory stays in its journal mode, which is still correct, only less concurrent.
        try:
            if self._conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self._retry(lambda: self._conn.execute("PRAGMA journal_mode=WAL").fetchone())
        except (ResultsDBError, sqlite3.Error):
            pass
        if version == SCHEMA_VERSION and app_id == APPLICATION_ID:
            return
        self._guarded(lambda: self._retry(self._migrate))

    def _inspect_snapshot(self) -> tuple[int, int, list[str]]:
        """``_inspect`` in one read transaction: read one by one, another process's migration could commit
        between the reads (no version or id yet, but its tables already), which looks like a foreign file."""
        self._conn.execute("BEGIN")
        try:
            return self._inspect()
        finally:
            self._rollback()

    def _inspect(self) -> tuple[int, int, list[str]]:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = self._conn.execute("PRAGMA application_id").fetchone()[0]
        tables = [r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return version, app_id, tables

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            from zoo.version import __version__

            raise ResultsDBError(
                f"results database {self.path} has schema version {version}, written by a newer caption-zoo; "
                f"this caption-zoo ({__version__}) reads schema versions up to {SCHEMA_VERSION}. Upgrade "
                f"(pip install -U caption-zoo) or pass --db with another file."
            )

    def _check_ours(self, version: int, app_id: int, tables: list[str]) -> None:
        own = [t for t in tables if not t.startswith("sqlite_")]
        if app_id != APPLICATION_ID and (own or version):
            raise ResultsDBError(
                f"{self.path} is an SQLite database but not a caption-zoo results database (tables: "
                f"{', '.join(own) or 'none'}; user_version {version}). Pass --db with another path."
            )

    def _migrate(self) -> None:
        """Bring the file to ``SCHEMA_VERSION`` in one write transaction; re-read the version under the
        lock, since another process may have migrated it meanwhile."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            version, app_id, tables = self._inspect()
            self._check_version(version)
            self._check_ours(version, app_id, tables)
            for step in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step]:
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self._conn.in_transaction:  # some errors (disk full) already rolled back
            self._conn.execute("ROLLBACK")

    # -- error handling --------------------------------------------------------------------------------
    def _guarded(self, fn: Callable[[], T]) -> T:
        """Run ``fn``, turning sqlite's terse errors into messages that name the file."""
        try:
            return fn()
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if "not a database" in text or "malformed" in text or "encrypted" in text:
                raise ResultsDBError(
                    f"{self.path} is not an SQLite results database ({text}). Pass --db with another path, "
                    f"or move the file away."
                ) from exc
            if "readonly" in text or "read-only" in text or "unable to open" in text:
                raise ResultsDBError(
                    f"cannot write results database {self.path} ({text}): it is read-only"
                    f"{_read_only_text(self.path)}. {WRITE_ADVICE}"
                ) from exc
            raise ResultsDBError(f"results database {self.path}: {text}") from exc

    def _retry(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` again while the file is locked: the busy timeout already waits, but SQLite can still
        answer 'locked' at once (a WAL being recovered, a schema being created next door)."""
        deadline = time.monotonic() + LOCK_RETRY_S
        delay = 0.01
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc):
                    raise
                if time.monotonic() > deadline:
                    raise ResultsDBError(
                        f"results database {self.path} stayed locked by another process for over "
                        f"{LOCK_RETRY_S:.0f} s; try again when it finishes"
                    ) from exc
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)

    # -- writing and reading ---------------------------------------------------------------------------
    def record(self, row: EvalRecord) -> int:
        """Store one evaluation in one transaction and return its id."""
        row.validate()
        values = []
        for name in _COLUMNS:
            value = getattr(row, name)
            values.append(_json(value, name) if name in _JSON_FIELDS else value)
        sql = f"INSERT INTO evaluations ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"

        def insert() -> int:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                cur = self._conn.execute(sql, values)
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            return int(cur.lastrowid)

        return self._guarded(lambda: self._retry(insert))

    def rows(self, data: str | None = None, split: str | None = None, **filters: Any) -> list[EvalRecord]:
        """Rows in insertion order, filtered by equality (a list or tuple value means 'any of', None means
        'not recorded')."""
        if data is not None:
            filters["data"] = data
        if split is not None:
            filters["split"] = split
        unknown = sorted(set(filters) - set(FILTERS))
        if unknown:
            raise ResultsDBError(f"unknown results filter {unknown[0]!r}; filters are {', '.join(FILTERS)}")
        where, params = [], []
        for key, value in filters.items():
            if value is None:
                where.append(f"{key} IS NULL")
            elif isinstance(value, (list, tuple, set)):
                where.append(f"{key} IN ({', '.join('?' * len(value))})")
                params.extend(value)
            else:
                where.append(f"{key} = ?")
                params.append(value)
        sql = f"SELECT id, {', '.join(_COLUMNS)} FROM evaluations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        raw = self._guarded(lambda: self._retry(lambda: self._conn.execute(sql, params).fetchall()))
        return [self._to_record(r) for r in raw]

    def _to_record(self, raw: tuple[Any, ...]) -> EvalRecord:
        d = dict(zip(("id", *_COLUMNS), raw))
        for name in _JSON_FIELDS:
            try:
                d[name] = json.loads(d[name])
            except (TypeError, json.JSONDecodeError) as exc:
                raise ResultsDBError(f"results database {self.path}: row {d['id']} has corrupt {name!r}: {exc}") from exc
        return EvalRecord(**d)

    def record_images(
        self, references_hash: str, references: Mapping[str, Iterable[str]], thumbnails: Mapping[str, bytes] | None = None
    ) -> None:
        """Store the images of reference set ``references_hash``: every image's reference captions, and
        the JPEG thumbnails given (image id → bytes). An image already stored keeps its references (they
        are what the hash names) and gains a thumbnail if it had none, so evaluations that embedded
        different images in their reports add up. One transaction."""
        thumbs = dict(thumbnails or {})
        values = [
            (references_hash, str(k), _json(list(refs), f"references of image {k!r}"), thumbs.get(str(k)))
            for k, refs in references.items()
        ]
        sql = (
            "INSERT INTO images (references_hash, image_id, refs, thumbnail) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (references_hash, image_id) DO UPDATE SET thumbnail = COALESCE(thumbnail, excluded.thumbnail)"
        )

        def insert() -> None:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(sql, values)
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

        self._guarded(lambda: self._retry(insert))

    def images(self, references_hash: str) -> dict[str, tuple[list[str], bytes | None]]:
        """Image id → (reference captions, JPEG thumbnail or None) for one reference set; empty when
        none were stored (rows recorded by ``db.record`` alone, or before schema version 2)."""
        sql = "SELECT image_id, refs, thumbnail FROM images WHERE references_hash = ?"
        raw = self._guarded(lambda: self._retry(lambda: self._conn.execute(sql, (references_hash,)).fetchall()))
        out = {}
        for image_id, refs, thumb in raw:
            try:
                out[str(image_id)] = (list(json.loads(refs)), bytes(thumb) if thumb is not None else None)
            except (TypeError, json.JSONDecodeError) as exc:
                raise ResultsDBError(f"results database {self.path}: image {image_id!r} has corrupt references: {exc}") from exc
        return out

    def groups(self) -> list[tuple[str, str, int]]:
        """``(data, split, number of rows)`` for every data set and split with rows, cheaply (no row is
        decoded): what a leaderboard can be drawn for."""
        sql = "SELECT data, split, COUNT(*) FROM evaluations GROUP BY data, split ORDER BY data, split"
        raw = self._guarded(lambda: self._retry(lambda: self._conn.execute(sql).fetchall()))
        return [(str(d), str(s), int(n)) for d, s, n in raw]

    def count(self) -> int:
        return int(self._guarded(lambda: self._conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]))

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "ResultsDB":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsDB({str(self.path)!r})"
