"""Trained weights a recipe names: downloaded once into the cache, checked against their sha256, loaded
as a checkpoint (as timm's ``_hub.py`` serves its ``pretrained=True``)."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from zoo.errors import CheckpointError
from zoo.files import atomic_write, sha256_file
from zoo.models.caption_model import CaptionModel
from zoo.models.checkpoint import load
from zoo.registry.recipes import Recipe


def cache_dir() -> Path:
    return Path(os.environ.get("ZOO_CACHE", Path.home() / ".cache" / "caption-zoo"))


def fetch_verified(url: str, sha256: str, dest: Path | None = None) -> Path:
    """Download (or reuse) ``url`` and check its sha256. A mismatching download is deleted (the next
    call downloads again); a mismatching local file (``file://`` or a path) is left alone and named."""
    local = url.startswith("file://") or "://" not in url
    if local:
        src = Path(url[len("file://") :] if url.startswith("file://") else url)
        if not src.exists():
            raise CheckpointError(f"weights file {src} does not exist")
        path = src
    else:
        path = dest or cache_dir() / "weights" / f"{sha256[:16]}-{Path(url).name}"
        if not path.exists():
            try:

                def write(tmp: str) -> None:
                    urllib.request.urlretrieve(url, tmp)  # noqa: S310 - URLs come from registry.yaml

                atomic_write(path, write)
            except OSError as exc:
                raise CheckpointError(f"could not download {url}: {exc}. Offline? Put the file at {path}.") from exc
    got = sha256_file(path)
    if got != sha256.lower():
        if local:
            raise CheckpointError(
                f"sha256 mismatch for {path}: expected {sha256}, got {got}. It is not the file "
                f"registry.yaml names (or it is corrupt); point the entry at the right file or fix its sha256."
            )
        path.unlink(missing_ok=True)
        raise CheckpointError(
            f"sha256 mismatch for the download of {url}: expected {sha256}, got {got}. The corrupt copy "
            f"was deleted; run again to download it afresh."
        )
    return path


def load_from_recipe(recipe: "Recipe") -> "CaptionModel":
    assert recipe.weights is not None
    path = fetch_verified(recipe.weights["url"], recipe.weights["sha256"])
    return load(path)
