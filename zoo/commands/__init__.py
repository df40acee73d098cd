"""Sub-commands of ``zoo``, one module each. Every module here is an internal plugin implementing
``zoo_add_commands(subparsers)``; adding a command means adding a module, nothing else.

The top layer: a command may import any package of the zoo. :func:`register` is how the command line
(``zoo.cli``) puts them into the plugin manager, right after the entry points, before a ``--plugin``.
"""

from __future__ import annotations

import importlib
import pkgutil

import pluggy


def register(pm: pluggy.PluginManager) -> None:
    """Register every module of this package (those not starting with ``_``) as the plugin
    ``zoo.commands.NAME``, once per manager."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        name = f"{__name__}.{info.name}"
        if info.name.startswith("_") or pm.has_plugin(name):
            continue
        pm.register(importlib.import_module(name), name=name)
