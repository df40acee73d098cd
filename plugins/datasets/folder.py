"""``folder``: your own images with a captions file, no ``dataset_coco.json`` to build by hand.

The folder (``root``) holds the images and one captions file, ``captions.jsonl`` or ``captions.csv``
(or pass ``captions=PATH``; file names are then relative to ``root``, which defaults to the folder of that
file):

* ``captions.jsonl``: one JSON object per line, ``{"file": "cat.jpg", "caption": "a cat"}`` or
  ``{"file": "cat.jpg", "captions": ["a cat", "a cat asleep"]}``; blank lines are skipped.
* ``captions.csv``: a header row with the columns ``file`` and ``caption`` (others are ignored); one row per
  caption, so an image with five captions has five rows.

An image may appear on several lines; its captions are merged in file order. The image id is the file
name as written.

Splits: with a ``split`` key/column on every line, ``split`` selects those lines (``all``: every line).
Without one, ``all`` takes every image and ``train``/``val``/``test`` are a deterministic **hash split**:
an image goes to train if ``int(sha256(file name)[:16 hex]) % 100 < 90``, to val if < 95, else test. The
hash depends only on the file name, so adding images never moves the others between splits.

Every error names the captions file and the line number (1-based, the header is line 1 of a CSV).
The file must be UTF-8; a leading byte-order mark (Excel's "CSV UTF-8") is fine.

Use it: ``zoo train --data folder --data-root photos --encoder resnet10t --decoder gru-attn``
(``--set data.captions=other.csv`` for another captions file, ``--set data.max_images=100`` for the
first 100 images); from Python, ``zoo.data.load_dataset("folder", root="photos", split="train")``.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import zoo
from zoo.data import CaptionDataset, Item, int_option
from zoo.errors import DataError

CAPTION_FILES = ("captions.jsonl", "captions.csv")
HASH_SPLITS = (("train", 90), ("val", 95), ("test", 100))


@dataclass
class _Record:
    line: int
    file: str
    captions: list[str]
    split: str | None


@dataclass
class _Image:
    captions: list[str] = field(default_factory=list)
    split: str | None = None
    line: int = 0


def hash_split(file: str) -> str:
    """The split a file name falls into when the captions file has no split: 90/5/5 by sha256."""
    bucket = int(hashlib.sha256(file.encode("utf-8")).hexdigest()[:16], 16) % 100
    return next(name for name, upper in HASH_SPLITS if bucket < upper)


def _text(value: Any, path: Path, line: int, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{path}:{line}: key {key!r} must be a non-empty string, got {value!r}")
    return value


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> DataError:
    """The error for a captions file that is not UTF-8, naming the file and the first line that is not."""
    line = None
    try:
        for i, raw in enumerate(path.read_bytes().splitlines(), start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                line = i
                break
    except OSError:
        pass
    where = f"{path}:{line}" if line else str(path)
    return DataError(
        f"{where}: not UTF-8 text ({exc.reason}: byte 0x{exc.object[exc.start]:02x}); the captions file must be "
        f"UTF-8. Save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`, or "
        f"\"CSV UTF-8\" in a spreadsheet)"
    )


def _read_jsonl(path: Path) -> Iterator[_Record]:
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg}, column {exc.colno})") from exc
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object with 'file' and 'caption', got {obj!r}")
            if "file" not in obj:
                raise DataError(f"{path}:{line_no}: missing key 'file'")
            file = _text(obj["file"], path, line_no, "file")
            caps: list[str] = []
            if "caption" in obj:
                caps.append(_text(obj["caption"], path, line_no, "caption"))
            if "captions" in obj:
                many = obj["captions"]
                if not isinstance(many, list) or not many:
                    raise DataError(f"{path}:{line_no}: key 'captions' must be a non-empty list of strings")
                caps.extend(_text(c, path, line_no, "captions") for c in many)
            if not caps:
                raise DataError(f"{path}:{line_no}: missing key 'caption' (or 'captions', a list)")
            split = _text(obj["split"], path, line_no, "split") if "split" in obj else None
            yield _Record(line_no, file, caps, split)


def _read_csv(path: Path) -> Iterator[_Record]:
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: Excel's "CSV UTF-8" starts with a BOM
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for needed in ("file", "caption"):
            if needed not in columns:
                raise DataError(
                    f"{path}:1: the header has no column {needed!r} (found {', '.join(columns) or 'nothing'}); "
                    f"the first row must name the columns, e.g. file,caption"
                )
        has_split = "split" in columns
        try:
            for row in reader:
                line_no = reader.line_num
                if None in row:
                    raise DataError(f"{path}:{line_no}: more fields than columns in the header (unquoted comma?)")
                file = _text(row["file"], path, line_no, "file")
                caption = _text(row["caption"], path, line_no, "caption")
                split = _text(row["split"], path, line_no, "split") if has_split else None
                yield _Record(line_no, file, [caption], split)
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from exc


READERS = {".jsonl": _read_jsonl, ".csv": _read_csv}


def _decoded(reader: Any, path: Path) -> Iterator[_Record]:
    """``reader(path)``'s records, a file that is not UTF-8 turned into a DataError naming it."""
    try:
        yield from reader(path)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from exc


def _captions_file(root: Path | None, captions: str | Path | None) -> Path:
    if captions is not None:
        path = Path(captions).expanduser()
        if not path.is_absolute() and not path.exists() and root is not None and (root / path).exists():
            path = root / path
        if not path.is_file():
            raise DataError(f"data set 'folder': captions file {path} does not exist")
        return path
    if root is None:
        raise DataError(
            "data set 'folder' needs its folder: pass root=PATH (command line: --data-root PATH), a folder "
            "holding the images and captions.jsonl or captions.csv"
        )
    for name in CAPTION_FILES:
        if (root / name).is_file():
            return root / name
    raise DataError(
        f"data set 'folder': {root} has no {' or '.join(CAPTION_FILES)}. Write one (lines like "
        f'{{"file": "cat.jpg", "caption": "a cat"}}, or a CSV with columns file,caption) or pass captions=PATH '
        f"(command line: --set data.captions=PATH)."
    )


def folder_dataset(
    root: str | Path | None = None,
    split: str = "train",
    captions: str | Path | None = None,
    max_images: int | None = None,
) -> CaptionDataset:
    """A folder of images with ``captions.jsonl`` or ``captions.csv``; split by a column or by file-name hash.

    ``split``: ``all``, or a split named in the file, or train/val/test (90/5/5 hash split)."""
    int_option("folder", "max_images", max_images)
    base = Path(root).expanduser() if root is not None else None
    path = _captions_file(base, captions)
    base = base if base is not None else path.parent
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"data set 'folder': captions file {path} must end in .jsonl or .csv")

    images: dict[str, _Image] = {}
    with_split: bool | None = None
    for rec in _decoded(reader, path):
        if with_split is None:
            with_split = rec.split is not None
        elif with_split != (rec.split is not None):
            raise DataError(f"{path}:{rec.line}: some lines have a split and others not; give every line one")
        image = images.setdefault(rec.file, _Image(split=rec.split, line=rec.line))
        if image.split != rec.split:
            raise DataError(
                f"{path}:{rec.line}: {rec.file!r} is in split {rec.split!r} here but {image.split!r} on line "
                f"{image.line}"
            )
        image.captions.extend(rec.captions)
    if not images:
        raise DataError(f"{path} has no captions")

    if split == "all":
        chosen = list(images)
    elif with_split:
        chosen = [f for f, im in images.items() if im.split == split]
        if not chosen:
            found = sorted({im.split or "" for im in images.values()})
            raise DataError(
                f"{path}: no line has split {split!r}; the splits in the file are {', '.join(found)} (or use 'all')"
            )
    elif split in dict(HASH_SPLITS):
        chosen = [f for f in images if hash_split(f) == split]
        if not chosen:
            raise DataError(
                f"{path}: the {split!r} part of the 90/5/5 hash split of {len(images)} images is empty; use "
                f"split='all', or add a 'split' key/column to the captions file"
            )
    else:
        raise DataError(
            f"data set 'folder': split must be all, train, val or test (the captions file has no split); "
            f"got {split!r}"
        )
    if max_images is not None:
        chosen = chosen[:max_images]
    items = [Item(f, images[f].captions, path=base / f) for f in chosen]
    info = {"format": "folder", "captions": path.name, "split_from": "file" if with_split else "hash"}
    return CaptionDataset("folder", split, items, root=base, info=info)


@zoo.hookimpl
def zoo_register(registry: Any) -> None:
    registry.add_dataset("folder", folder_dataset)
