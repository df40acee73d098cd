"""Which plugin a failure came from: an exception raised inside a plugin's own code (a decoder's ``step``, an
encoder's ``forward``, a tokenizer's ``decode``) becomes a :class:`zoo.errors.PluginError` that names the
plugin, the part (``decoder 'updown'``), what the zoo was doing and the plugin's own file and line.

Why: a decoder that failed only on a large batch used to stop training at the first validation with a bare
``RuntimeError`` that named neither the decoder nor its plugin; the user could not tell whose bug it was.
Only failures whose traceback passes through the part's own code are blamed on it (the files of its class
and the package they belong to, not the zoo's and not torch's); anything else is passed on unchanged, and
so are ``ZooError`` (already a message) and running out of memory (not a fault of the code).
"""

from __future__ import annotations

import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from zoo.errors import ContractError, PluginError, ZooError
from zoo.registry.manager import get_registry

#: top-level packages whose code is never a plugin's own
_NOT_PLUGINS = {"zoo", "torch", "builtins", "abc", "typing", "collections", "functools", "contextlib"}


def code_roots(obj: Any) -> set[str]:
    """The files and package folders of the plugin code behind ``obj``'s class (its class and the classes it
    derives from, outside the zoo and torch)."""
    roots: set[str] = set()
    for cls in type(obj).__mro__:
        top = cls.__module__.split(".")[0]
        if top in _NOT_PLUGINS:
            continue
        module = sys.modules.get(top)
        paths = list(getattr(module, "__path__", []) or [])
        if not paths and getattr(module, "__file__", None):
            paths = [module.__file__]
        roots.update(str(Path(p).resolve()) for p in paths)
    return roots


def _inside(filename: str, roots: set[str]) -> bool:
    path = str(Path(filename).resolve())
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def raised_in(exc: BaseException, roots: set[str]) -> traceback.FrameSummary | None:
    """The deepest frame of ``exc``'s traceback inside ``roots``, or None when it never passed through them."""
    if not roots or exc.__traceback__ is None:
        return None
    found = [f for f in traceback.extract_tb(exc.__traceback__) if _inside(f.filename, roots)]
    return found[-1] if found else None


def plugin_of(kind: str, name: str | None) -> str | None:
    """The plugin that registered ``name`` as a ``kind`` (None when it is not registered)."""
    if not name:
        return None
    try:
        return get_registry().get(kind, name).plugin
    except ZooError:
        return None


def part_failure(exc: BaseException, kind: str, name: str | None, part: Any, doing: str) -> PluginError | None:
    """A PluginError for ``exc`` when it was raised inside ``part``'s own code (see the module docstring);
    None otherwise. ``kind``/``name``: how the part is registered (``decoder``, ``gru-attn``)."""
    if isinstance(exc, (ZooError, MemoryError)) or type(exc).__name__ == "OutOfMemoryError":
        return None
    frame = raised_in(exc, code_roots(part))
    if frame is None:
        return None
    plugin = plugin_of(kind, name)
    cls = type(part)
    who = f"{kind} {name!r}" if name else f"{kind} {cls.__qualname__}"
    origin = f"plugin {plugin!r}, {cls.__module__}.{cls.__qualname__}" if plugin else f"{cls.__module__}.{cls.__qualname__}"
    return PluginError(
        f"{who} ({origin}) failed while {doing}: {type(exc).__name__}: {exc} (raised in its code at "
        f"{frame.filename}:{frame.lineno}): a fault in the plugin, or in what it was given (report it to its "
        f"authors; --debug or ZOO_DEBUG=1 prints the traceback)"
    )


@contextmanager
def blamed(parts: list[tuple[str, str | None, Any]], doing: str) -> Iterator[None]:
    """Run the block; an exception raised inside the own code of one of ``parts`` (``(kind, registered name,
    the part)``; the first whose code it passed through) leaves it as a PluginError naming the plugin and
    the part, the original exception as its cause; any other passes through unchanged."""
    try:
        yield
    except ContractError as exc:  # a guard that knew only the part's class (the beam search's shape check)
        for kind, name, part in parts:
            plugin = plugin_of(kind, name)
            if plugin and repr(type(part).__name__) in str(exc) and repr(plugin) not in str(exc):
                raise ContractError(f"{kind} {name!r} (plugin {plugin!r}) while {doing}: {exc}") from exc
        raise
    except Exception as exc:
        for kind, name, part in parts:
            failure = part_failure(exc, kind, name, part, doing)
            if failure is not None:
                raise failure from exc
        raise
