"""Plugin options are plain JSON values, checked where they enter: defaults when a plugin registers a
factory (``Registry.add``), values when a part is built (``zoo.create_decoder``, ``zoo.create_model``).

Why: options are stored in checkpoints and ``run.json`` and shown by ``zoo info``. A default that is a
function once showed as ``<built-in method tanh ...>``, trained, saved, and failed only after ``zoo eval``
had decoded and scored; an explicit non-JSON value made ``zoo.save`` raise a bare ``TypeError``. Here
either is a :class:`zoo.errors.ContractError` naming the plugin and the option, before anything runs.
JSON here means: None, true/false, finite numbers, strings, and lists/tuples or string-keyed mappings of
those (a tuple is stored as a list).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from zoo.errors import ContractError

JSON_HINT = (
    "options must be plain JSON values (null, true/false, a number, a string, or a list or mapping of "
    "those), because they are stored in checkpoints and run.json and shown by `zoo info`"
)


def json_problem(value: Any, path: str = "") -> str | None:
    """None when ``value`` is plain JSON; else where and what the first offending part is."""
    if value is None or isinstance(value, (bool, str, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path or 'the value'} is {value!r} (not finite)"
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            problem = json_problem(v, f"{path}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{path or 'the mapping'} has the key {k!r}, which is not a string"
            problem = json_problem(v, f"{path}[{k!r}]")
            if problem:
                return problem
        return None
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return f"{path + ' is ' if path else ''}{shown} (a {type(value).__name__})"


def _fix(value: Any) -> str:
    if hasattr(value, "item") and hasattr(value, "dtype"):  # a numpy or torch scalar
        return " Pass a plain Python value instead (value.item())."
    if callable(value):
        name = getattr(value, "__name__", "the function")
        return f" Take a name instead (e.g. {name!r}) and look the function up inside the plugin."
    return ""


def check_option_defaults(kind: str, name: str, plugin: str, defaults: dict[str, Any]) -> None:
    """At registration: every keyword default of a factory is plain JSON."""
    for option, default in defaults.items():
        if default is inspect.Parameter.empty:
            continue
        problem = json_problem(default)
        if problem:
            raise ContractError(
                f"{kind} {name!r} from plugin {plugin!r}: the default of option {option!r} is {problem}; "
                f"{JSON_HINT}.{_fix(default)}"
            )


def check_option_values(kind: str, name: str, plugin: str, values: dict[str, Any]) -> None:
    """At construction: every option value given for ``kind`` ``name`` is plain JSON."""
    for option, value in values.items():
        problem = json_problem(value)
        if problem:
            raise ContractError(
                f"{kind} {name!r} (plugin {plugin!r}): option {option!r} = {problem}; {JSON_HINT}.{_fix(value)}"
            )
