"""Caption data sets: images with their raw human (or generated) captions, and loaders for them.

Every data set, built-in or from a plugin, is a factory registered with ``registry.add_dataset(name,
factory)`` that returns a ``CaptionDataset``: a list of ``Item`` (image id, raw captions, and either an
image file or a function that renders the image). Captions stay raw here; tokenizers and the evaluation
protocol (PTB tokenizer) normalise them, so the same references serve training and scoring.

Images are decoded only when needed, by ``open_image``, which turns every way a file can be bad (missing,
corrupt, a decompression bomb) into a ``DataError`` that names the file and says what to do. For batches,
``ImageDataset`` wraps a ``CaptionDataset`` for a ``torch.utils.data.DataLoader`` so that decoding and the
transform run in the loader's worker processes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import inspect
import json
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, overload

import PIL.Image
import torch
import torch.utils.data
from tqdm.auto import tqdm

from zoo.errors import DataError, ZooError
from zoo.files import missing_reason
from zoo.registry.manager import get_registry

__all__ = [
    "CaptionDataset",
    "ImageDataset",
    "Item",
    "collate_skip_none",
    "drop_bad_images",
    "int_option",
    "load_dataset",
    "open_image",
]

log = logging.getLogger("zoo.data")
_COUNTER_SLOTS = 257

ImageId = int | str


# -- files ------------------------------------------------------------------------------------------------
def read_json(path: str | Path, what: str) -> Any:
    """A JSON file, gzip-compressed or not (told by its first bytes, whatever its name: COCO's files are
    shipped either way). Every failure is a DataError naming ``what`` (e.g. "COCO captions file") and the
    path: missing, unreadable, a damaged gzip stream, or not JSON (with line and column)."""
    p = Path(path)
    problem = missing_reason(p)  # a symbolic link loop is not "does not exist"
    if problem is not None:
        raise DataError(f"{what} {p} {problem}")
    compressed = False
    try:
        with p.open("rb") as fh:
            compressed = fh.read(2) == b"\x1f\x8b"
        with (gzip.open(p, "rb") if compressed else p.open("rb")) as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        how = " (gzip-compressed)" if compressed else ""
        raise DataError(
            f"{what} {p}{how} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); the file "
            f"is damaged or not a {what}."
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} {p} is not valid JSON: it is not UTF-8 text ({exc})") from exc
    except (OSError, EOFError) as exc:  # unreadable, or a truncated or damaged gzip stream
        raise DataError(f"{what} {p} cannot be read: {exc}") from exc


# -- images -----------------------------------------------------------------------------------------------
#: the environment variable (and ``--max-image-pixels``, which sets it for the command and its DataLoader
#: workers) that says how many pixels a decoded image may have; 0 or ``none``: no limit
MAX_PIXELS_ENV = "ZOO_MAX_IMAGE_PIXELS"
#: a JPEG is decoded at the smallest scale (1/2, 1/4, 1/8, done in the DCT by libjpeg: ``Image.draft``)
#: that keeps both sides at least this long: far above what any encoder's transform keeps (224-518 px),
#: so features do not change, while a 10000×10000 photo takes ~5 MB instead of 300 MB to decode
DRAFT_MIN_SIDE = 1024
_PIL_GUARD = threading.Lock()


def max_image_pixels() -> int | None:
    """The most pixels a decoded image may have: ``$ZOO_MAX_IMAGE_PIXELS`` when set (0 or ``none``: no
    limit), else twice ``PIL.Image.MAX_IMAGE_PIXELS``, the size at which Pillow itself refuses a file (so
    a Python user who set Pillow's limit keeps it)."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip().lower().replace("_", "").replace(",", "")
    if text:
        if text in ("0", "none"):
            return None
        try:
            value = int(float(text))
        except ValueError:
            raise DataError(
                f"{MAX_PIXELS_ENV}={os.environ[MAX_PIXELS_ENV]!r} is not a number of pixels; give an integer, "
                f"e.g. {MAX_PIXELS_ENV}=400000000, or 0 for no limit"
            ) from None
        return value if value > 0 else None
    limit = PIL.Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


def pixel_count(text: str) -> int:
    """An argparse ``type`` for ``--max-image-pixels``: an integer ≥ 0 (``1e8``, ``400_000_000`` too)."""
    try:
        value = int(float(text.replace("_", "").replace(",", "")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels (e.g. 400000000, or 0 for no limit), got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of pixels ≥ 0 (0: no limit), got {text!r}")
    return value


def add_image_arguments(parser: Any) -> None:
    """``--max-image-pixels N`` for a command that decodes images. It sets ``$ZOO_MAX_IMAGE_PIXELS`` as
    the command line is read, so the command's DataLoader workers (forked or spawned) follow it too."""
    class _SetLimit(argparse.Action):
        def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
            os.environ[MAX_PIXELS_ENV] = str(values)
            setattr(namespace, self.dest, values)

    parser.add_argument(
        "--max-image-pixels", type=pixel_count, action=_SetLimit, default=None, metavar="N",
        help=f"decode images of up to N pixels (default: ${MAX_PIXELS_ENV}, else twice Pillow's "
        f"decompression-bomb limit, ~179 million); 0: no limit. Large JPEGs are decoded downscaled, so they "
        f"count at the size they are decoded at",
    )


def open_image(path: str | Path) -> PIL.Image.Image:
    """Decode ``path`` into an RGB image (transparency composited on white).

    A JPEG is decoded downscaled by libjpeg when it is large (``Image.draft``, see ``DRAFT_MIN_SIDE``), so
    memory stays flat whatever the photo's size. An image with more pixels (as decoded) than
    :func:`max_image_pixels` allows is refused with a message saying how to allow it; Pillow's own
    decompression-bomb check and its warning are replaced by that one (a CLI user cannot set
    ``PIL.Image.MAX_IMAGE_PIXELS``, and a raw Python warning with a source line tells them nothing).

    Raises ``DataError`` naming the file when it is missing, unreadable, not an image, truncated, or too
    large. EXIF orientation is not applied, as in the usual COCO pipelines, so features match theirs."""
    path = Path(path)
    try:
        limit = max_image_pixels()
        with _PIL_GUARD, warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            saved, PIL.Image.MAX_IMAGE_PIXELS = PIL.Image.MAX_IMAGE_PIXELS, None  # ours is checked below
            try:
                im = PIL.Image.open(path)
            finally:
                PIL.Image.MAX_IMAGE_PIXELS = saved
        with im:
            stored = im.size
            if im.format == "JPEG":
                im.draft(im.mode, (DRAFT_MIN_SIDE, DRAFT_MIN_SIDE))
            if limit is not None and im.size[0] * im.size[1] > limit:
                raise DataError(_too_large_message(path, stored, im.size, limit))
            return to_rgb(im)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(
            f"image file {path} does not exist. Check the data set root (--data-root) and images folder, "
            f"or remove the entry from the captions file."
        ) from exc
    except IsADirectoryError as exc:
        raise DataError(f"image path {path} is a folder, not an image file.") from exc
    except PermissionError as exc:
        raise DataError(f"image file {path} cannot be read: permission denied.") from exc
    except OSError as exc:
        problem = missing_reason(path) if exc.errno is not None else None
        if problem is not None:  # a symbolic link loop, a broken link: not a damaged image
            raise DataError(f"image file {path} {problem}.") from exc
        raise _undecodable(path, exc) from exc
    except (SyntaxError, ValueError, EOFError) as exc:
        # some plugins raise SyntaxError or ValueError on malformed headers
        raise _undecodable(path, exc) from exc


def _undecodable(path: Path, exc: BaseException) -> DataError:
    """An image that opens but does not decode (UnidentifiedImageError, "image file is truncated" and
    friends are OSErrors too)."""
    return DataError(
        f"image file {path} cannot be decoded ({type(exc).__name__}: {exc}): it is corrupt, truncated or "
        f"not an image. Replace or delete it, or skip such files (skip_bad_images=True; command line: "
        f"--skip-bad-images)."
    )


def to_rgb(im: PIL.Image.Image) -> PIL.Image.Image:
    """``im`` as RGB, transparency composited on white (a transparent PNG's hidden pixels are often black,
    and an encoder should see the picture as a viewer does)."""
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if not has_alpha:
        return im.convert("RGB")
    rgba = im.convert("RGBA")
    background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    background.alpha_composite(rgba)
    return background.convert("RGB")


def _too_large_message(path: Path, stored: tuple[int, int], decoded: tuple[int, int], limit: int) -> str:
    pixels = decoded[0] * decoded[1]
    size = f"{stored[0]}×{stored[1]}" + (f", decoded at {decoded[0]}×{decoded[1]}" if decoded != stored else "")
    return (
        f"image file {path} has {pixels:,} pixels ({size}), over the limit of {limit:,} that guards against "
        f"files that expand to gigabytes in memory. If you trust it, raise the limit: --max-image-pixels "
        f"{max(pixels, 2 * limit)} on the command line, or {MAX_PIXELS_ENV}={max(pixels, 2 * limit)} in the "
        f"environment (0: no limit; in Python, PIL.Image.MAX_IMAGE_PIXELS, of which the default is twice); or "
        f"remove the file from the data set."
    )


# -- items and data sets ----------------------------------------------------------------------------------
@dataclass
class Item:
    """One image and its raw captions. The image is a file (``path``) or generated on demand (``render``,
    a picklable callable, so DataLoader workers can render too)."""

    image_id: ImageId
    captions: list[str]
    path: Path | None = None
    render: Callable[[], PIL.Image.Image] | None = None

    def __post_init__(self) -> None:
        if self.path is not None and not isinstance(self.path, Path):
            self.path = Path(self.path)

    def load_image(self) -> PIL.Image.Image:
        """The image as RGB; ``DataError`` naming the file if it cannot be decoded."""
        if self.render is not None:
            return to_rgb(self.render())
        if self.path is not None:
            return open_image(self.path)
        raise DataError(f"image {self.image_id!r} has neither a file path nor a render function")


class CaptionDataset(Sequence[Item]):
    """A named split of a data set: items in a fixed order, plus where they came from.

    ``info`` describes how the items were made (generator seed and image size, annotation file name, ...);
    it is part of the ``fingerprint``, so put there what changes the content but is not visible in the
    items, and no machine-specific paths."""

    def __init__(
        self,
        name: str,
        split: str,
        items: list[Item],
        root: str | Path | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.split = split
        self.root = Path(root) if root is not None else None
        self.info: dict[str, Any] = dict(info or {})
        self._items = list(items)
        seen: set[tuple[type, ImageId]] = set()
        for item in self._items:
            key = (type(item.image_id), item.image_id)
            if key in seen:
                raise DataError(
                    f"data set {name!r} split {split!r}: image id {item.image_id!r} appears twice; "
                    f"image ids must be unique (merge its captions into one item)."
                )
            seen.add(key)

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> Item: ...

    @overload
    def __getitem__(self, index: slice) -> "CaptionDataset": ...

    def __getitem__(self, index: int | slice) -> "Item | CaptionDataset":
        """An item; a slice gives a smaller ``CaptionDataset`` (with its own fingerprint)."""
        if isinstance(index, slice):
            return CaptionDataset(self.name, self.split, self._items[index], self.root, self.info)
        return self._items[index]

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"CaptionDataset({self.name!r}, split={self.split!r}, images={len(self)}, root={self.root})"

    def references(self) -> dict[ImageId, list[str]]:
        """Image id → raw captions, as the evaluation protocol wants them."""
        return {item.image_id: list(item.captions) for item in self._items}

    def captions(self) -> list[str]:
        """Every raw caption in item order (tokenizer training)."""
        return [c for item in self._items for c in item.captions]

    def fingerprint(self) -> str:
        """sha256 over name, split, info, and every item's id, path and captions: the feature-cache key.

        Paths are taken relative to ``root`` when they lie under it, so moving or re-mounting the data
        set keeps the fingerprint; image bytes are not read (replacing a file in place is not detected)."""
        h = hashlib.sha256()
        head = {"name": self.name, "split": self.split, "info": self.info}
        h.update(json.dumps(head, sort_keys=True, default=str).encode())
        for item in self._items:
            row = [item.image_id, self._relative(item.path), item.captions]
            h.update(b"\n")
            h.update(json.dumps(row, ensure_ascii=False).encode())
        return h.hexdigest()

    def _relative(self, path: Path | None) -> str | None:
        if path is None:
            return None
        if self.root is not None:
            try:
                return path.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return path.as_posix()


# -- batches ----------------------------------------------------------------------------------------------
class ImageDataset(torch.utils.data.Dataset):
    """``(index, transform(image))`` for each item of a ``CaptionDataset``, for a DataLoader.

    Decoding and the transform happen in ``__getitem__``, hence in the loader's worker processes. With
    ``skip_bad_images`` a file that cannot be decoded gives ``(index, None)`` instead of an error; it is
    logged and counted in ``bad_images`` (shared with the workers), and ``collate_skip_none`` drops it from
    the batch, so a long feature-extraction run is not lost to one broken JPEG."""

    def __init__(
        self,
        dataset: CaptionDataset,
        transform: Callable[[PIL.Image.Image], Any],
        skip_bad_images: bool = False,
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        # One counter per loader worker (slot 0: the main process), in shared memory created before any
        # worker starts: forked and spawned workers both see it (torch pickles shared tensors by handle),
        # and no worker ever writes another's slot, so no lock is needed.
        self._bad = torch.zeros(_COUNTER_SLOTS, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        item = self.dataset[index]
        try:
            image = item.load_image()
        except ZooError as exc:
            if not self.skip_bad_images:
                raise
            worker = torch.utils.data.get_worker_info()
            self._bad[0 if worker is None else 1 + worker.id % (_COUNTER_SLOTS - 1)] += 1
            log.warning("skipping image %r: %s", item.image_id, exc)
            return index, None
        return index, self.transform(image)

    @property
    def bad_images(self) -> int:
        """How many images were skipped so far, across all workers."""
        return int(self._bad.sum())


class _Probe(torch.utils.data.Dataset):
    """``(index, None)`` for an image that decodes, ``(index, why)`` for one that does not."""

    def __init__(self, dataset: CaptionDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, str | None]:
        try:
            self.dataset[index].load_image()
        except ZooError as exc:
            return index, str(exc)
        return index, None


def drop_bad_images(
    dataset: CaptionDataset, num_workers: int = 0, progress: bool = False
) -> tuple[CaptionDataset, list[dict[str, Any]]]:
    """``dataset`` without the images that cannot be decoded, and a list naming each one dropped
    (``{"image_id", "path", "error"}``): training's ``skip_bad_images``.

    Training needs the bad images known before it starts, unlike evaluation (which drops them batch by
    batch): the data order, the batches and the feature cache are functions of the item list, so a skipped
    image must leave the list rather than shrink one batch now and then. This costs one decode of every
    image (in ``num_workers`` DataLoader workers), asked for only with ``skip_bad_images``."""
    loader = torch.utils.data.DataLoader(
        _Probe(dataset), batch_size=16, num_workers=num_workers, collate_fn=list, generator=torch.Generator()
    )
    bad: dict[int, str] = {}
    with tqdm(total=len(dataset), desc=f"checking {dataset.name} images", unit="img", disable=not progress) as bar:
        for batch in loader:
            bad.update((i, why) for i, why in batch if why is not None)
            bar.update(len(batch))
    if not bad:
        return dataset, []
    for i in sorted(bad):
        log.warning("skipping image %r: %s", dataset[i].image_id, bad[i])
    kept = [item for i, item in enumerate(dataset) if i not in bad]
    dropped = [
        {"image_id": dataset[i].image_id, "path": None if dataset[i].path is None else str(dataset[i].path),
         "error": bad[i]}
        for i in sorted(bad)
    ]
    return CaptionDataset(dataset.name, dataset.split, kept, dataset.root, dataset.info), dropped


def collate_skip_none(batch: list[tuple[int, Any]]) -> tuple[torch.Tensor, Any]:
    """Collate ``(index, image)`` pairs, dropping skipped images: ``(indices, images)``.

    ``indices`` (int64) says which items the rows of ``images`` are; when every image of the batch was
    bad, ``indices`` is empty and ``images`` is None."""
    kept = [(i, x) for i, x in batch if x is not None]
    if not kept:
        return torch.empty(0, dtype=torch.long), None
    indices = torch.tensor([i for i, _ in kept], dtype=torch.long)
    images = torch.utils.data.default_collate([x for _, x in kept])
    return indices, images


# -- for factories --------------------------------------------------------------------------------------
def int_option(dataset: str, key: str, value: Any, low: int = 1, high: int | None = None) -> int | None:
    """``value`` checked as an integer option of a data set factory (None passes through): options often
    arrive from the command line or YAML, so a wrong type is reported by data set and option name."""
    if value is None:
        return None
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        bounds = f"{low}-{high}" if high is not None else f"≥ {low}"
        raise DataError(f"data set {dataset!r}: option {key!r} must be an integer {bounds}, got {value!r}")
    return value


# -- by name ----------------------------------------------------------------------------------------------
def load_dataset(name: str, root: str | Path | None = None, split: str = "train", **options: Any) -> CaptionDataset:
    """Build the data set registered as ``name`` (``zoo list datasets``) for ``split``.

    ``options`` go to its factory; an option the factory does not take is reported with the ones it does
    (``zoo info <name>`` lists them too)."""
    registry = get_registry()
    entry = registry.get("dataset", name)
    accepted = entry.options()
    takes_any = _takes_var_keyword(entry.factory)
    unknown = sorted(k for k in options if k not in accepted)
    if unknown and not takes_any:
        allowed = ", ".join(k for k in accepted if k not in ("root", "split")) or "none"
        raise DataError(
            f"data set {entry.name!r} has no option {unknown[0]!r}; its options are: {allowed} "
            f"(see `zoo info {entry.name}`)."
        )
    dataset = registry.create("dataset", name, root=root, split=split, **options)
    if not isinstance(dataset, CaptionDataset):
        raise DataError(
            f"data set {entry.name!r} (plugin {entry.plugin!r}) returned {type(dataset).__name__}, not a "
            f"zoo.data.CaptionDataset; fix the plugin's factory."
        )
    return dataset


def _takes_var_keyword(factory: Callable[..., Any]) -> bool:
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is p.VAR_KEYWORD for p in params)
