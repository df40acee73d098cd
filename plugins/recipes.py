"""Registers the zoo's own catalogue, ``registry.yaml``.

It lives at the repository root (an editable install uses the checkout's copy) and a wheel installs it as
the data file ``share/caption-zoo/registry.yaml`` under whatever scheme pip used: ``sys.prefix`` for a
plain install, the user base for ``--user``, the given prefix for ``--prefix``. The installed
distribution's own file list says where that was, so it is asked before guessing ``sys.prefix``. When the
catalogue is found nowhere, the plugin fails with the places it searched (``zoo list`` shows that as a
warning) rather than registering an empty catalogue.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import zoo
from zoo.errors import RecipeError

DISTRIBUTION = "caption-zoo"
FILE_NAME = "registry.yaml"
DATA_DIR = ("share", "caption-zoo")
# In a checkout this module is plugins/recipes.py (installed ones are zoo_plugins/recipes.py).
_HERE = Path(__file__).resolve().parent
CHECKOUT_ROOT: Path | None = _HERE.parent if _HERE.name == "plugins" else None


def _from_distribution() -> tuple[list[Path], str]:
    """``registry.yaml`` as listed in the installed distribution's files, and how that was looked up."""
    where = f"the file list of the installed {DISTRIBUTION} distribution"
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return [], f"{where} (not installed)"
    found = []
    for f in dist.files or ():
        # a wheel's data file (../../../share/caption-zoo/registry.yaml) or a source tree's root copy
        if f.name == FILE_NAME and (tuple(f.parent.parts[-2:]) == DATA_DIR or not f.parent.parts):
            found.append(Path(str(dist.locate_file(f))).resolve())
    return found, f"{where} ({'no ' + FILE_NAME + ' listed' if not found else ', '.join(map(str, found))})"


def find_catalogue() -> tuple[Path | None, list[str]]:
    """The catalogue's path (None when it is nowhere) and every place searched, in order."""
    searched: list[str] = []
    if CHECKOUT_ROOT is not None:
        path = CHECKOUT_ROOT / FILE_NAME
        if path.is_file():
            return path, [str(path)]
        searched.append(str(path))
    listed, where = _from_distribution()
    searched.append(where)
    for path in listed:
        if path.is_file():
            return path, searched
    fallback = Path(sys.prefix).joinpath(*DATA_DIR, FILE_NAME)
    searched.append(str(fallback))
    if fallback.is_file():
        return fallback, searched
    return None, searched


@zoo.hookimpl
def zoo_register(registry):
    path, searched = find_catalogue()
    if path is None:
        raise RecipeError(
            f"caption-zoo's catalogue {FILE_NAME} was not found, so no model recipes are available; searched: "
            + "; ".join(searched)
            + ". Reinstall caption-zoo (pip installs it as share/caption-zoo/registry.yaml)."
        )
    registry.add_recipes(path)
