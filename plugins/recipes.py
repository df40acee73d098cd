"""Registers the zoo's own catalogue, ``registry.yaml`` at the repository root."""

from pathlib import Path

import zoo

REGISTRY_YAML = Path(__file__).resolve().parent.parent / "registry.yaml"


@zoo.hookimpl
def zoo_register(registry):
    if REGISTRY_YAML.exists():
        registry.add_recipes(REGISTRY_YAML)
