"""The module paths from before ``zoo/`` was split into subpackages (``zoo.objective``,
``zoo.leaderboard``, ``zoo.stats``, ``zoo.tokenizer``, …), kept working for code written against them.

``import zoo.objective`` (or ``from zoo.tokenizer import SPECIAL_TOKENS``) gives a small module that
forwards every name to where it lives now, and warns once with the new path (a ``DeprecationWarning``, so
it shows in a plugin's tests and not to the user of a command). Nothing is imported until an old path is:
the finder only answers for the names below. Modules whose old name is now a package (``zoo.data``,
``zoo.generation``, ``zoo.evaluation``, ``zoo.results``, ``zoo.registry``) need no alias: the package
re-exports what the module had.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any, Sequence

#: old module → the modules that hold its names now, searched in order
MOVED: dict[str, tuple[str, ...]] = {
    "zoo.hookspecs": ("zoo.registry.hookspecs",),
    "zoo.manager": ("zoo.registry.manager", "zoo.registry.loading"),
    "zoo.options": ("zoo.registry.options",),
    "zoo.recipes": ("zoo.registry.recipes",),
    "zoo.decoder": ("zoo.contracts.decoder",),
    "zoo.encoder": ("zoo.contracts.encoder",),
    "zoo.tokenizer": ("zoo.contracts.tokenizer",),
    "zoo.features": ("zoo.contracts.features",),
    "zoo.contract": ("zoo.contracts.probe",),
    "zoo.threads": ("zoo.runtime.threads",),
    "zoo.distributed": ("zoo.runtime.distributed",),
    "zoo.constraints": ("zoo.generation.constraints",),
    "zoo.decoding": ("zoo.generation.options",),
    "zoo.attention": ("zoo.generation.attention", "zoo.models.caption_model"),
    "zoo.feature_cache": ("zoo.data.feature_cache",),
    "zoo.model": ("zoo.models.caption_model",),
    "zoo.factory": ("zoo.models.factory", "zoo.models.builder"),
    "zoo.checkpoint": ("zoo.models.checkpoint", "zoo.models.hub", "zoo.files"),
    "zoo.figures": ("zoo.views.figures",),
    "zoo.curves": ("zoo.views.curves", "zoo.training.monitor"),
    "zoo.attention_figure": ("zoo.views.attention_figure",),
    "zoo.html_page": ("zoo.views.html_page",),
    "zoo.leaderboard_page": ("zoo.views.leaderboard_page",),
    "zoo.report": ("zoo.evaluation.report",),
    "zoo.metrics": ("zoo.evaluation.cider",),
    "zoo.stats": ("zoo.evaluation.bootstrap",),
    "zoo.model_eval": ("zoo.evaluation.model_eval", "zoo.results.record"),
    "zoo.caption_stats": ("zoo.evaluation.caption_stats",),
    "zoo.train": (
        "zoo.training.loop", "zoo.training.config", "zoo.training.state", "zoo.training.schedule",
        "zoo.training.pairs", "zoo.training.runs", "zoo.evaluation.captioning", "zoo.runtime.device",
    ),
    "zoo.runs": ("zoo.training.runs",),
    "zoo.run_guard": ("zoo.training.run_guard",),
    "zoo.objective": ("zoo.training.objective",),
    "zoo.reward": ("zoo.training.reward",),
    "zoo.leaderboard": ("zoo.results.leaderboard", "zoo.views.leaderboard", "zoo.views.leaderboard_columns"),
    "zoo.compare": ("zoo.results.compare",),
}


class _Forwarding(types.ModuleType):
    """An old module path: every attribute comes from the modules that hold it now."""

    def __init__(self, name: str, targets: Sequence[str]) -> None:
        super().__init__(name, f"Moved: see {', '.join(targets)}.")
        self.__targets = tuple(targets)

    def __getattr__(self, attr: str) -> Any:
        for target in self.__targets:
            module = importlib.import_module(target)
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r} (it moved to {' / '.join(self.__targets)})")

    def __dir__(self) -> list[str]:
        names: set[str] = set()
        for target in self.__targets:
            names.update(n for n in dir(importlib.import_module(target)) if not n.startswith("__"))
        return sorted(names)


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers only for the names of :data:`MOVED`, after every real finder has said no."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        targets = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {' / '.join(targets)}; import it from there (the old path still works, "
            f"for now)",
            DeprecationWarning,
            stacklevel=2,
        )
        return _Forwarding(spec.name, targets)

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the forwarding module fetches names when asked."""


def install() -> None:
    """Put the finder last on ``sys.meta_path`` (once), so a real module of that name always wins."""
    if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
        sys.meta_path.append(_OldPaths())
