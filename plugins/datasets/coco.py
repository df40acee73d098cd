"""``coco`` (official caption annotations) and ``coco-karpathy`` (Karpathy's ``dataset_coco.json``).

``coco`` reads ``captions_<split><year>.json`` as released by COCO (``images`` with ``id`` and
``file_name``; ``annotations`` with ``image_id`` and ``caption``) plus the image folder. Where the files
are, when not given (first match wins; ``.json.gz`` is accepted wherever ``.json`` is):

* annotations: ``root/annotations/captions_{split}{year}.json``, ``root/captions_{split}{year}.json``,
  then ``root/captions.json``, one file holding every image, as in ``coco-mini`` (then every split gives
  all of its images, and a warning says so: use ``coco-karpathy`` for real splits);
* images: the first of ``root/{split}{year}``, ``root/images/{split}{year}``, ``root/images``, ``root``
  that holds the first image's ``file_name``.

``split`` is ``train``/``val`` (2014 release) or a full name such as ``val2014`` or ``train2017``. So
``load_dataset("coco", root="../shared/data/coco-mini")`` needs nothing else. Images without any caption
are left out. Image files are not checked here; a missing one is named when it is decoded.

``coco-karpathy`` reads Karpathy's split file: ``train`` is train + restval (``restval=False`` for train
only), ``val``, ``test`` (5,000 each on full COCO), or ``restval``/``all``. The image of an entry is
``root/filepath/filename``; the image id is its ``cocoid`` (``imgid`` for the Flickr files of the same
format, which have no ``cocoid``); captions are the ``raw`` sentences.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import zoo
from zoo.data import CaptionDataset, Item, int_option, read_json
from zoo.errors import DataError

log = logging.getLogger("zoo.data")
DEFAULT_YEAR = "2014"
KARPATHY_SPLITS = {
    "train": ("train", "restval"),
    "val": ("val",),
    "test": ("test",),
    "restval": ("restval",),
    "all": ("train", "restval", "val", "test"),
}


# -- shared helpers ---------------------------------------------------------------------------------------
def _need(obj: Any, key: str, path: Path, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{path}: {where} has no key {key!r}; is this the right file?")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{path}: {where} key {key!r} must be {names}, got {type(value).__name__}")
    return value


def _resolve(path: str | Path, root: Path | None) -> Path:
    """A path as given, or relative to ``root`` if it is not found as given."""
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists() and root is not None and (root / p).exists():
        return root / p
    return p


def _first_existing(candidates: list[Path]) -> Path | None:
    for c in candidates:
        for p in (c, c.with_name(c.name + ".gz")):
            if p.is_file():
                return p
    return None


# -- coco -------------------------------------------------------------------------------------------------
def _year_split(split: str) -> str:
    if re.fullmatch(r"[a-z]+\d{4}", split):
        return split
    return f"{split}{DEFAULT_YEAR}"


def coco_dataset(
    root: str | Path | None = None,
    split: str = "train",
    annotations: str | Path | None = None,
    images: str | Path | None = None,
    max_images: int | None = None,
) -> CaptionDataset:
    """COCO captions in the official format (``captions_train2014.json`` etc.) with the image folder.

    Point ``root`` at the COCO folder, or give ``annotations`` (captions json) and ``images`` (folder)."""
    limit = int_option("coco", "max_images", max_images)
    base = Path(root).expanduser() if root is not None else None
    ys = _year_split(split)
    if annotations is not None:
        ann_path = _resolve(annotations, base)
    elif base is None:
        raise DataError(
            "data set 'coco' needs its folder: pass root=PATH (command line: --data-root PATH) or "
            "annotations=PATH to a captions_*.json file (command line: --set data.annotations=PATH)"
        )
    else:
        name = f"captions_{ys}.json"
        candidates = [base / "annotations" / name, base / name, base / "captions.json"]
        found = _first_existing(candidates)
        if found is None:
            tried = ", ".join(str(c) for c in candidates)
            raise DataError(
                f"data set 'coco' split {split!r}: no captions file under {base} (tried {tried}, and .json.gz). "
                f"Check --data-root, or name the file: --set data.annotations=PATH (Python: annotations=PATH)."
            )
        ann_path = found
    doc = read_json(ann_path, "COCO captions file")
    image_list = _need(doc, "images", ann_path, "the top level", list)
    ann_list = _need(doc, "annotations", ann_path, "the top level", list)

    files: dict[Any, str] = {}
    for i, im in enumerate(image_list):
        image_id = _need(im, "id", ann_path, f"images[{i}]", (int, str))
        if image_id in files:
            raise DataError(f"{ann_path}: images[{i}] key 'id': {image_id!r} appears twice in 'images'")
        files[image_id] = _need(im, "file_name", ann_path, f"images[{i}]", str)
    captions: dict[Any, list[str]] = {}
    for i, ann in enumerate(ann_list):
        image_id = _need(ann, "image_id", ann_path, f"annotations[{i}]", (int, str))
        caption = _need(ann, "caption", ann_path, f"annotations[{i}]", str)
        if image_id not in files:
            raise DataError(
                f"{ann_path}: annotations[{i}] key 'image_id' is {image_id!r}, which is not an id in 'images'; "
                f"the file is inconsistent (mixed releases?)."
            )
        captions.setdefault(image_id, []).append(caption)

    folder = _image_folder(images, base or ann_path.parent, ys, next(iter(files.values()), None))
    order = [image_id for image_id in files if image_id in captions]
    if not _names_split(ann_path, split, ys):
        _warn_no_splits(ann_path, split, len(order))
    if limit is not None:
        order = order[:limit]
    items = [Item(image_id, captions[image_id], path=folder / files[image_id]) for image_id in order]
    info = {"format": "coco", "annotations": ann_path.name, "images_without_captions": len(files) - len(captions)}
    return CaptionDataset("coco", split, items, root=folder, info=info)


def _names_split(path: Path, split: str, ys: str) -> bool:
    """Whether the annotation file's name says it holds ``split`` (COCO releases one file per split:
    ``captions_val2014.json``)."""
    words = re.split(r"[^a-z0-9]+", path.name.lower())
    named = re.compile(rf"(?:{re.escape(split.lower())}|{re.escape(ys.lower())})(?:\d{{4}})?")
    return any(named.fullmatch(w) for w in words)


def _warn_no_splits(path: Path, split: str, n: int) -> None:
    """Loading split ``split`` from a file that holds no split information gives the whole file, whatever
    the split: say so (once per load), since train, val and test are then the same images."""
    karpathy = path.parent / "dataset_coco.json"
    if karpathy.is_file() or karpathy.with_name(karpathy.name + ".gz").is_file():
        instead = f"the Karpathy split file next to it: --data coco-karpathy --data-root {path.parent}"
    else:
        instead = (
            "--data coco-karpathy with a Karpathy split file (dataset_coco.json in --data-root, or "
            "--set data.json=PATH)"
        )
    log.warning(
        "warning: data set 'coco': the annotation file %s defines no splits (COCO names each file by the "
        "split it holds, captions_<split><year>.json), so split %r is the whole file (%d images): train, val "
        "and test are the same images, and a model evaluated on 'test' is scored on its own training images. "
        "For separate splits use %s.",
        path,
        split,
        n,
        instead,
    )


def _image_folder(images: str | Path | None, base: Path, ys: str, first_file: str | None) -> Path:
    if images is not None:
        return _resolve(images, base)
    candidates = [base / ys, base / "images" / ys, base / "images", base]
    if first_file is not None:
        for c in candidates:
            if (c / first_file).is_file():
                return c
    for c in candidates:
        if c.is_dir() and c != base:
            return c
    return candidates[0]


# -- coco-karpathy ----------------------------------------------------------------------------------------
def karpathy_dataset(
    root: str | Path | None = None,
    split: str = "train",
    json: str | Path | None = None,
    restval: bool = True,
    max_images: int | None = None,
) -> CaptionDataset:
    """COCO in Karpathy's split (``dataset_coco.json``): train (+ restval) / val / test, raw captions.

    ``root`` holds the image folders named by each entry's ``filepath``; ``json`` defaults to
    ``root/dataset_coco.json``."""
    limit = int_option("coco-karpathy", "max_images", max_images)
    if split not in KARPATHY_SPLITS:
        raise DataError(f"data set 'coco-karpathy' has splits {', '.join(KARPATHY_SPLITS)}; got split {split!r}")
    base = Path(root).expanduser() if root is not None else None
    if json is not None:
        json_path = _resolve(json, base)
    elif base is None:
        raise DataError(
            "data set 'coco-karpathy' needs its folder: pass root=PATH (command line: --data-root PATH) "
            "holding dataset_coco.json and the image folders, or json=PATH (command line: --set data.json=PATH)"
        )
    else:
        json_path = base / "dataset_coco.json"
        if not json_path.is_file() and json_path.with_name(json_path.name + ".gz").is_file():
            json_path = json_path.with_name(json_path.name + ".gz")
    if base is None:
        base = json_path.parent
    doc = read_json(json_path, "Karpathy split file")
    entries = _need(doc, "images", json_path, "the top level", list)
    wanted = set(KARPATHY_SPLITS[split])
    if split == "train" and not restval:
        wanted = {"train"}
    items: list[Item] = []
    for i, entry in enumerate(entries):
        where = f"images[{i}]"
        if _need(entry, "split", json_path, where, str) not in wanted:
            continue
        key = "cocoid" if isinstance(entry, dict) and "cocoid" in entry else "imgid"
        image_id = _need(entry, key, json_path, where, (int, str))
        filename = _need(entry, "filename", json_path, where, str)
        filepath = entry.get("filepath", "")
        sentences = _need(entry, "sentences", json_path, where, list)
        raw = [_need(s, "raw", json_path, f"{where}.sentences[{j}]", str) for j, s in enumerate(sentences)]
        items.append(Item(image_id, raw, path=base / filepath / filename))
        if limit is not None and len(items) >= limit:
            break
    info = {"format": "karpathy", "json": json_path.name, "restval": bool(restval) if split == "train" else None}
    return CaptionDataset("coco-karpathy", split, items, root=base, info=info)


@zoo.hookimpl
def zoo_register(registry: Any) -> None:
    registry.add_dataset("coco", coco_dataset)
    registry.add_dataset("coco-karpathy", karpathy_dataset)
