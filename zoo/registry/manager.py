"""The plugin manager: one ``pluggy.PluginManager("zoo")`` for the process.

Built-in plugins are entry points of the ``zoo`` group in our own ``pyproject.toml``, loaded exactly like
a third party's. ``ZOO_DISABLE_PLUGIN_AUTOLOAD=1`` keeps third-party entry points out (tests use it); the
zoo's own entry points still load, since without them nothing works. ``load_plugin`` (``loading``; the command
line's ``--plugin``) adds a module by dotted name or file path, like ``pytest -p``.

A plugin that raises on import or while registering, or registers a name another plugin already has, is
reported by name (``Registry.failed_plugins``) and skipped; the rest still load. A plugin the user loads by
hand (``load_plugin``, ``--plugin``) fails loudly instead.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import pluggy

from zoo.errors import PluginLoadError
from zoo.registry import hookspecs
from zoo.registry.registry import Registry

ENTRY_POINT_GROUP = "zoo"
DISABLE_AUTOLOAD_ENV = "ZOO_DISABLE_PLUGIN_AUTOLOAD"
OWN_DISTRIBUTION = "caption-zoo"

_pm: pluggy.PluginManager | None = None
_registry: Registry | None = None
_pending_failures: dict[str, str] = {}  # entry points that failed to load, for the next registry


def _autoload_disabled() -> bool:
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _dist_name(ep: importlib.metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else None


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager, built (and entry points loaded) on first use.

    The zoo's own entry points load first, under their entry-point names. A third party's entry point
    whose name is already taken (``recipes``, ``gru``, or the same name in two distributions) is loaded
    under ``"<distribution>:<name>"`` instead: it is never dropped, and never displaces a built-in."""
    global _pm
    if _pm is None:
        check_not_shadowed()
        pm = pluggy.PluginManager("zoo")
        pm.add_hookspecs(hookspecs)
        failures: dict[str, str] = {}
        eps = _entry_points()
        own = [ep for ep in eps if _dist_name(ep) == OWN_DISTRIBUTION]
        if not own:
            raise PluginLoadError(
                "caption-zoo's built-in plugins are not installed as entry points. Install the package "
                "(`pip install -e .` in the repository, or `make test`) rather than running from the "
                "source folder."
            )
        third_party = [] if _autoload_disabled() else [ep for ep in eps if _dist_name(ep) != OWN_DISTRIBUTION]
        for ep in own + third_party:
            dist = _dist_name(ep) or "unknown-distribution"
            taken = pm.has_plugin(ep.name) or ep.name in failures
            name = f"{dist}:{ep.name}" if taken else ep.name
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - any import error is reported, never fatal
                failures[name] = describe_failure(exc, f"entry point {ep.name} = {ep.value} of {dist}")
                continue
            if pm.is_registered(plugin):
                continue  # the very same module listed twice: nothing is lost
            if pm.has_plugin(name):
                failures[name] = (
                    f"entry point {ep.name} = {ep.value} of {dist} clashes with the already loaded plugin "
                    f"{name!r} ({getattr(pm.get_plugin(name), '__name__', '?')}); rename one of them"
                )
                continue
            _register(pm, plugin, name, failures)
        _pm = pm
        _pending_failures.update(failures)
        for name, why in failures.items():
            warnings.warn(f"zoo plugin {name!r} failed to load and was skipped: {why}", stacklevel=2)
    return _pm


#: the folder of the real ``zoo`` package (this file is ``zoo/registry/manager.py``)
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def shadowing_folder() -> Path | None:
    """The folder that Python imported as ``zoo`` instead of this package, or None when ``zoo`` is ours.

    Why it happens: a folder named ``zoo/`` (run outputs, say) in a directory that comes first on
    ``sys.path`` — the working directory under ``python -m zoo`` or a script there, or anything on
    ``PYTHONPATH``. Without an ``__init__.py`` it becomes a namespace package that hides an editable
    install; with one it hides any install. Our own modules still load (by their full names), but ``zoo``
    itself is that folder, so every plugin's ``zoo.hookimpl`` or ``zoo.Decoder`` is missing."""
    mod = sys.modules.get("zoo")
    if mod is None:
        return None
    file = getattr(mod, "__file__", None)
    if file and Path(file).resolve().parent == PACKAGE_DIR:
        return None
    if file:
        return Path(file).resolve().parent
    paths = [Path(p) for p in (getattr(mod, "__path__", None) or [])]
    if any(p.resolve() == PACKAGE_DIR for p in paths):
        return None
    return paths[0].resolve() if paths else Path("zoo").resolve()


def check_not_shadowed() -> None:
    """Raise a ``PluginLoadError`` naming the folder that shadows the ``zoo`` package, if one does: the
    alternative is one "module 'zoo' has no attribute 'hookimpl'" per plugin, which names no cause."""
    folder = shadowing_folder()
    if folder is None:
        return
    raise PluginLoadError(
        f"the folder {folder} shadows the zoo package ({PACKAGE_DIR}): Python imported `zoo` from that folder "
        f"because its parent directory comes first on the import path (the working directory under "
        f"`python -m zoo` or a script run there, or PYTHONPATH), so no plugin can load. Rename that folder "
        f"(e.g. to zoo-runs), or run from another directory (the `zoo` command does not look in the working "
        f"directory unless PYTHONPATH says so)."
    )


def describe_failure(exc: BaseException, where: str) -> str:
    """``Type: message (where at file:line)``, the line being the plugin's own deepest frame (the call to
    ``add_decoder`` rather than the registry's ``raise``) when there is one."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    ours = str(Path(__file__).resolve().parents[1])  # the zoo package: its own frames are not the plugin's
    theirs = [f for f in frames if not str(Path(f.filename).resolve()).startswith(ours + os.sep)]
    frame = (theirs or frames or [None])[-1]
    loc = f" at {frame.filename}:{frame.lineno}" if frame else ""
    if isinstance(exc, SystemExit):  # sys.exit() in a plugin would end `zoo` silently, often with status 0
        return (f"SystemExit: the plugin called sys.exit({exc.code!r}) ({where}{loc}); a plugin must not end the "
                f"program: remove the call (or keep script code under `if __name__ == \"__main__\":`)")
    return f"{type(exc).__name__}: {exc} ({where}{loc})"


def _register(pm: pluggy.PluginManager, plugin: Any, name: str, failures: dict[str, str]) -> bool:
    try:
        pm.register(plugin, name=name)
    except Exception as exc:  # noqa: BLE001
        failures[name] = describe_failure(exc, "registering hooks")
        return False
    return True


def get_registry() -> Registry:
    """The registry filled by every plugin's ``zoo_register`` hook (built once, updated by load_plugin).

    Plugins register in the order they were loaded (the zoo's own first). One that raises, or takes a
    name another plugin already has, is recorded in ``failed_plugins`` with the reason and contributes
    nothing; the others still load."""
    global _registry
    if _registry is None:
        pm = get_plugin_manager()
        reg = Registry()
        reg.failed_plugins.update(_pending_failures)
        for name, plugin in pm.list_name_plugin():
            if plugin is not None:
                call_register(reg, pm, plugin, name)
        _registry = reg
    return _registry


def _register_impls(pm: pluggy.PluginManager, plugin: Any) -> list[Any]:
    return [impl for impl in pm.hook.zoo_register.get_hookimpls() if impl.plugin is plugin]


def call_register(
    reg: Registry, pm: pluggy.PluginManager, plugin: Any, name: str, warn: bool = True
) -> BaseException | None:
    """Run ``plugin``'s ``zoo_register`` implementation(s) as pluggy registered them (so
    ``@hookimpl(specname="zoo_register")`` on a function of another name works). On failure the plugin's
    partial registrations are undone, the reason is recorded and warned about, and the error returned."""
    impls = _register_impls(pm, plugin)
    if not impls:
        return None
    kwargs = {"registry": reg}
    reg.current_plugin = name
    try:
        for impl in impls:
            impl.function(*[kwargs[arg] for arg in impl.argnames])
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a duplicate name or sys.exit included: one plugin never takes the rest down
        reg.discard_plugin(name)
        reg.failed_plugins[name] = describe_failure(exc, "zoo_register")
        if warn:
            warnings.warn(f"zoo plugin {name!r} raised in zoo_register and was skipped: {reg.failed_plugins[name]}",
                          stacklevel=3)
        return exc
    finally:
        reg.current_plugin = "<direct>"
    return None


def plugin_failures() -> dict[str, str]:
    """Plugins that failed to load or register so far (name → reason), without building anything."""
    if _registry is not None:
        return dict(_registry.failed_plugins)
    return dict(_pending_failures)


def reset() -> None:
    """Forget the manager and registry (tests; after installing a package in-process)."""
    global _pm, _registry
    _pm = None
    _registry = None
    _pending_failures.clear()
