"""The plugin manager: one ``pluggy.PluginManager("zoo")`` for the process.

Built-in plugins are entry points of the ``zoo`` group in our own ``pyproject.toml``, loaded exactly like
a third party's. ``ZOO_DISABLE_PLUGIN_AUTOLOAD=1`` keeps third-party entry points out (tests use it); the
zoo's own entry points still load, since without them nothing works. ``load_plugin`` (and the command
line's ``--plugin``) adds a module by dotted name or file path, like ``pytest -p``.

A plugin that raises on import or while registering is reported by name and skipped; the rest still load.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
import traceback
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from zoo import hookspecs
from zoo.errors import PluginLoadError
from zoo.registry import Registry

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


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager, built (and entry points loaded) on first use."""
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager("zoo")
        pm.add_hookspecs(hookspecs)
        failures: dict[str, str] = {}
        own = [ep for ep in _entry_points() if ep.dist is not None and ep.dist.name == OWN_DISTRIBUTION]
        if not own:
            raise PluginLoadError(
                "caption-zoo's built-in plugins are not installed as entry points. Install the package "
                "(`pip install -e .` in the repository, or `make test`) rather than running from the "
                "source folder."
            )
        disabled = _autoload_disabled()
        for ep in _entry_points():
            third_party = ep.dist is None or ep.dist.name != OWN_DISTRIBUTION
            if disabled and third_party:
                continue
            if pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import error is reported, never fatal
                failures[ep.name] = _describe(exc, f"entry point {ep.name} = {ep.value}")
                continue
            _register(pm, plugin, ep.name, failures)
        _load_command_modules(pm)
        _pm = pm
        _pending_failures.update(failures)
        for name, why in failures.items():
            warnings.warn(f"zoo plugin {name!r} failed to load and was skipped: {why}", stacklevel=2)
    return _pm



def _describe(exc: BaseException, where: str) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    loc = f" at {frame.filename}:{frame.lineno}" if frame else ""
    return f"{type(exc).__name__}: {exc} ({where}{loc})"


def _register(pm: pluggy.PluginManager, plugin: Any, name: str, failures: dict[str, str]) -> bool:
    try:
        pm.register(plugin, name=name)
    except Exception as exc:  # noqa: BLE001
        failures[name] = _describe(exc, "registering hooks")
        return False
    return True


def _load_command_modules(pm: pluggy.PluginManager) -> None:
    """Every module in ``zoo.commands`` is an internal plugin adding sub-commands."""
    import zoo.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"zoo.commands.{info.name}")
        pm.register(mod, name=f"zoo.commands.{info.name}")


def get_registry() -> Registry:
    """The registry filled by every plugin's ``zoo_register`` hook (built once, updated by load_plugin)."""
    global _registry
    if _registry is None:
        pm = get_plugin_manager()
        reg = Registry()
        reg.failed_plugins.update(_pending_failures)
        for impl in reversed(pm.hook.zoo_register.get_hookimpls()):
            _call_register(reg, impl.plugin, pm.get_name(impl.plugin) or impl.plugin_name)
        _registry = reg
    return _registry


def _call_register(reg: Registry, plugin: Any, name: str) -> None:
    from zoo.errors import DuplicateNameError

    reg.current_plugin = name
    try:
        plugin.zoo_register(registry=reg)
    except DuplicateNameError:
        raise
    except Exception as exc:  # noqa: BLE001
        reg.failed_plugins[name] = _describe(exc, "zoo_register")
        warnings.warn(f"zoo plugin {name!r} raised in zoo_register and was skipped: {exc}", stacklevel=3)
    finally:
        reg.current_plugin = "<direct>"


def load_plugin(module_or_path: str | ModuleType | Any, name: str | None = None) -> Any:
    """Load a plugin by hand: a dotted module name, a ``.py`` file path, or an object with hooks.

    Unlike autoloaded entry points, a plugin the user asked for by name fails loudly."""
    pm = get_plugin_manager()
    plugin: Any
    if isinstance(module_or_path, str):
        spec = module_or_path
        path = Path(spec)
        try:
            if spec.endswith(".py") or path.is_file():
                if not path.is_file():
                    raise FileNotFoundError(f"no such file: {path}")
                mod_name = name or f"zoo_user_plugin_{path.stem}"
                ispec = importlib.util.spec_from_file_location(mod_name, path)
                if ispec is None or ispec.loader is None:
                    raise ImportError(f"cannot import {path}")
                plugin = importlib.util.module_from_spec(ispec)
                sys.modules[mod_name] = plugin
                ispec.loader.exec_module(plugin)
            else:
                plugin = importlib.import_module(spec)
        except Exception as exc:
            raise PluginLoadError(
                f"plugin {spec!r} could not be loaded: {type(exc).__name__}: {exc}. Check the module name "
                f"(importable from this Python) or the file path."
            ) from exc
        name = name or spec
    else:
        plugin = module_or_path
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
    if pm.is_registered(plugin) or pm.has_plugin(name):
        return plugin
    try:
        pm.register(plugin, name=name)
    except Exception as exc:
        raise PluginLoadError(f"plugin {name!r} could not be registered: {exc}") from exc
    if _registry is not None and hasattr(plugin, "zoo_register"):
        _call_register(_registry, plugin, name)
        if name in _registry.failed_plugins:
            raise PluginLoadError(f"plugin {name!r} failed in zoo_register: {_registry.failed_plugins[name]}")
    return plugin


def reset() -> None:
    """Forget the manager and registry (tests; after installing a package in-process)."""
    global _pm, _registry
    _pm = None
    _registry = None
    _pending_failures.clear()
