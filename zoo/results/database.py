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

The row itself (``EvalRecord`` and its checks) is ``zoo.results.evalrecord``; the hashes that say which rows
are comparable and the environment a row records are ``zoo.results.provenance``. This module is the file:
where it lives, its schema and migrations, locking, writing and reading.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar
from urllib.parse import quote

from zoo.errors import ResultsDBError
from zoo.files import free_bytes, missing_reason
from zoo.results.evalrecord import EvalRecord, canonical_json
from zoo.version import __version__

DEFAULT_DB = "~/.local/share/caption-zoo/results.sqlite"
DB_ENV = "ZOO_RESULTS_DB"
SCHEMA_VERSION = 3
# 'CZoo' as a 32-bit big-endian integer: marks the file as ours, so a foreign SQLite file is not "migrated".
APPLICATION_ID = 0x435A6F6F
BUSY_TIMEOUT_S = 30.0
LOCK_RETRY_S = 120.0

T = TypeVar("T")


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


#: a disk with less than this free is called full (SQLite needs a few pages for its journal, and the
#: kernel keeps some blocks back, so writes fail before ``statvfs`` reaches exactly 0)
FULL_BELOW = 64 * 1024


def _full_text(path: Path, sqlite_says_full: bool = False) -> str:
    """"the disk holding X is full (N bytes free)" when it is (or SQLite says so: it needed more than was
    left), else "" (a real I/O error: say that)."""
    free = free_bytes(path)
    if free is None or (free >= FULL_BELOW and not sqlite_says_full):
        return ""
    return f"the disk holding {path.parent} is full ({free} bytes free)"


def _sqlite_header(path: Path) -> bool:
    """Whether ``path`` starts like an SQLite file, so a read error means damage, not a foreign file."""
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _damaged_text(path: Path, text: str) -> str:
    """What to do about a damaged results database: where the rows may still be, how to get them out."""
    wal = path.with_name(path.name + "-wal")
    keep = (f" Keep {wal} beside it: it holds the most recent rows (SQLite's write-ahead log), and copy both "
            f"together." if wal.exists() else "")
    return (
        f"results database {path} is damaged (SQLite: {text}): it is an SQLite file, but parts of it cannot be "
        f"read, e.g. it was cut short by a full disk or an interrupted copy.{keep} To recover the rows that "
        f"can be read: `sqlite3 {path} .recover | sqlite3 {path}.recovered` and pass --db {path}.recovered (or "
        f"restore the file from a backup). Meanwhile pass --db with another path; the damaged file is left as it is."
    )


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
        problem = missing_reason(self.path)
        if problem is not None and problem != "does not exist" and "broken symbolic link" not in problem:
            raise ResultsDBError(f"results database {self.path} {problem}. Or pass --db with another path.")
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
            if "malformed" in text or ("not a database" in text and _sqlite_header(self.path)):
                raise ResultsDBError(_damaged_text(self.path, text)) from exc
            if "not a database" in text or "encrypted" in text:
                raise ResultsDBError(
                    f"{self.path} is not an SQLite results database: it is not an SQLite file at all ({text}). "
                    f"Pass --db with another path, or move the file away."
                ) from exc
            if "disk is full" in text or "disk I/O error" in text:
                full = _full_text(self.path, sqlite_says_full="disk is full" in text)
                if full:
                    raise ResultsDBError(f"cannot write results database {self.path}: {full} (SQLite: {text}). "
                                         f"Free some space there, or {WRITE_ADVICE[0].lower()}{WRITE_ADVICE[1:]}") from exc
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
            values.append(canonical_json(value, name) if name in _JSON_FIELDS else value)
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
            (references_hash, str(k), canonical_json(list(refs), f"references of image {k!r}"), thumbs.get(str(k)))
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
