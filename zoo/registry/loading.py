"""A plugin loaded by hand: ``zoo.load_plugin`` and the command line's ``--plugin`` (like ``pytest -p``).

Apart from the manager because it checks more than the manager knows: a plugin the user asked for by name
fails loudly, its recipe files included, and the catalogue (``recipes``) itself reads the registry the
manager builds.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import types
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from zoo.errors import DuplicateNameError, PluginLoadError, ZooError
from zoo.registry.manager import (
    call_register,
    describe_failure,
    get_plugin_manager,
    get_registry,
)
from zoo.registry.recipes import load_recipes


def load_plugin(module_or_path: str | ModuleType | Any, name: str | None = None) -> Any:
    """Load a plugin by hand: a dotted module name, a ``.py`` file path, an object with hooks, or one hook
    function marked ``@zoo.hookimpl`` (a notebook or script that defines its ``zoo_register`` inline).

    Unlike autoloaded entry points, a plugin the user asked for by name fails loudly: an import error, an
    exception in its ``zoo_register``, a name another plugin already registered, or a bad recipe file
    raises a ``ZooError`` naming the plugin (and the plugin is left unloaded)."""
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
        except (Exception, SystemExit) as exc:  # sys.exit() at import must not end `zoo` silently
            raise PluginLoadError(_import_failure(spec, exc)) from exc
        name = name or spec
    elif inspect.isfunction(module_or_path) and hasattr(module_or_path, f"{pm.project_name}_impl"):
        # pluggy looks for hooks among a plugin's attributes, and a function has none of its own: hold it
        hook = module_or_path
        plugin = types.SimpleNamespace(**{hook.__name__: hook}, __doc__=hook.__doc__)  # `zoo list weights` shows it
        name = name or f"{hook.__module__}.{hook.__qualname__}"
    else:
        plugin = module_or_path
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
    if pm.is_registered(plugin):
        return plugin
    if pm.has_plugin(name):
        raise PluginLoadError(
            f"plugin {name!r} could not be registered: that name is already taken by "
            f"{getattr(pm.get_plugin(name), '__name__', pm.get_plugin(name))!r}; load it under another name"
        )
    reg = get_registry()  # built before the new plugin joins, so its own failure is raised, not warned
    try:
        pm.register(plugin, name=name)
    except Exception as exc:
        raise PluginLoadError(f"plugin {name!r} could not be registered: {exc}") from exc
    error: ZooError | None = None
    failure = call_register(reg, pm, plugin, name, warn=False)  # raised below instead
    if failure is not None:
        why = reg.failed_plugins.pop(name)
        cls = DuplicateNameError if isinstance(failure, DuplicateNameError) else PluginLoadError
        error = cls(f"plugin {name!r} failed in zoo_register: {why}")
    elif any(who == name for _, who in reg.recipe_files):
        with warnings.catch_warnings():  # raised below instead
            warnings.simplefilter("ignore")
            load_recipes()  # records a bad recipe file under the plugin that added it
        if name in reg.failed_plugins:
            error = PluginLoadError(f"plugin {name!r}: {reg.failed_plugins.pop(name)}")
    if error is not None:
        reg.discard_plugin(name)
        pm.unregister(plugin)
        raise error from failure
    return plugin


def _import_failure(spec: str, exc: BaseException) -> str:
    """Why ``--plugin spec`` did not import. Three different things to fix: the plugin itself is not
    there (its name or path), it is there but one of *its* imports is missing (install that package), or
    it is there and raised while importing (a bug in it, at its file and line)."""
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    is_file = spec.endswith(".py") or Path(spec).is_file()
    itself = not is_file and missing is not None and (spec == missing or spec.startswith(missing + "."))
    if isinstance(exc, FileNotFoundError) or itself:
        return (f"plugin {spec!r} could not be loaded: {type(exc).__name__}: {exc}. Check the module name "
                f"(importable from this Python) or the file path.")
    found = f"the file {spec}" if is_file else f"the module {spec!r}"
    if missing is not None:
        return (f"plugin {spec!r} could not be loaded: {found} was found, but its dependency {missing!r} "
                f"was not ({describe_failure(exc, 'importing it')}). Install the package that provides "
                f"{missing!r} into this Python (e.g. `pip install {missing.split('.')[0]}`, or the plugin's "
                f"own `pip install` that lists its dependencies).")
    return (f"plugin {spec!r} could not be loaded: {found} was found, but importing it raised "
            f"{describe_failure(exc, 'importing it')}. Fix the plugin at that line.")
