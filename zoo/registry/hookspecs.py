"""The hooks a plugin may implement. Short on purpose: one registration hook per kind is not needed,
because the registry object the hook receives owns names, kinds, duplicates and look-ups.

A plugin is any module (or object) with functions marked ``@zoo.hookimpl``::

    import zoo

    @zoo.hookimpl
    def zoo_register(registry):
        registry.add_decoder("my-decoder", MyDecoder)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import argparse

    import torch

    from zoo.registry.registry import Registry

hookspec = pluggy.HookspecMarker("zoo")
hookimpl = pluggy.HookimplMarker("zoo")


@hookspec
def zoo_register(registry: "Registry") -> None:
    """Add named factories to the registry: ``registry.add_decoder(name, cls)``, ``add_encoder``,
    ``add_encoder_family``, ``add_tokenizer``, ``add_dataset``, ``add_metric``, ``add_objective``,
    ``add_executor``, ``add_recipes`` (docs/plugins.md has a complete example of each; executors: docs/cluster.md).

    Called once per plugin, the zoo's own first. If it raises (a name already taken included), everything
    that plugin added is dropped and the failure recorded in ``registry.failed_plugins``; the other plugins
    still register."""


@hookspec(firstresult=True)
def zoo_pretrained_weights(encoder_name: str, model: "torch.nn.Module") -> "dict[str, Any] | None":
    """A weight source: return a state dict for the timm model ``encoder_name`` (in timm's key layout,
    loadable into ``model``), or None to let the next source try. The first non-None answer wins, so an
    offline source marked ``tryfirst`` is asked before timm's hub."""


@hookspec
def zoo_add_commands(subparsers: "argparse._SubParsersAction") -> None:
    """Add sub-commands to the ``zoo`` command line. Each parser should ``set_defaults(func=...)`` with a
    function taking the parsed ``argparse.Namespace`` and returning an exit code."""
