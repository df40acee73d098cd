"""Registers the zoo's own catalogue, ``registry.yaml``: at the repository root in a checkout (editable
install), or under ``<prefix>/share/caption-zoo/`` where a wheel install puts it."""

import sys
from pathlib import Path

import zoo

CANDIDATES = (
    Path(__file__).resolve().parent.parent / "registry.yaml",
    Path(sys.prefix) / "share" / "caption-zoo" / "registry.yaml",
)


@zoo.hookimpl
def zoo_register(registry):
    for path in CANDIDATES:
        if path.exists():
            registry.add_recipes(path)
            return
