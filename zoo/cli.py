"""The ``zoo`` command line. Sub-commands come from the ``zoo_add_commands`` hook, so plugins can add
their own; ``--plugin MODULE_OR_PATH`` (repeatable, like ``pytest -p``) loads a plugin before anything.
Errors the user can fix (``ZooError``) print one message and no traceback; ``--debug`` or ``ZOO_DEBUG=1``
prints the traceback as well (for a plugin author, or a bug report)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from typing import Sequence

import pluggy

from zoo import commands
from zoo.errors import ZooError
from zoo.registry.loading import load_plugin
from zoo.registry.manager import get_plugin_manager, plugin_failures
from zoo.runtime.threads import configure_threads, stop_adapting
from zoo.version import __version__

DEBUG_ENV = "ZOO_DEBUG"


def _split_plugins(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``--plugin``/``-p`` values wherever they stand (before or after the sub-command), and the rest of
    the command line without them, in order, for the real parser (sub-commands know no ``--plugin``)."""
    pre = argparse.ArgumentParser(prog="zoo", add_help=False, allow_abbrev=False)
    pre.add_argument("--plugin", "-p", action="append", default=[])
    known, rest = pre.parse_known_args(argv)
    return list(known.plugin), rest


def _split_debug(argv: Sequence[str]) -> tuple[bool, list[str]]:
    """``--debug`` wherever it stands, or ``ZOO_DEBUG=1``: errors print their traceback too."""
    rest = [a for a in argv if a != "--debug"]
    env = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    return env or len(rest) != len(argv), rest


def _is_module_name(spec: str) -> bool:
    return not spec.endswith(".py") and not os.path.isfile(spec)


def _load_plugins(specs: list[str]) -> None:
    """Load the user's ``--plugin`` modules; any failure is an error (the caller exits 2). A module name is
    also looked up in the current directory (appended to ``sys.path``, so installed modules win), as
    ``python -m zoo`` would; the ``zoo`` console script does not put the current directory on the path."""
    cwd = os.getcwd()
    if any(_is_module_name(s) for s in specs) and cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    for spec in specs:
        load_plugin(spec)


def _warn_failed_plugins() -> None:
    for plugin, why in plugin_failures().items():
        print(f"warning: plugin {plugin!r} failed to load: {why}", file=sys.stderr)


def command_manager() -> pluggy.PluginManager:
    """The plugin manager with the built-in sub-commands (``zoo.commands``) registered in it."""
    pm = get_plugin_manager()
    commands.register(pm)
    return pm


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo",
        description="Caption Zoo: image-captioning models by name; train, score on COCO, compare.",
        allow_abbrev=False,  # `--plug` must not pass for --plugin here: plugins are taken out before
    )
    parser.add_argument("--version", action="version", version=f"caption-zoo {__version__}")
    parser.add_argument(
        "--plugin",
        "-p",
        action="append",
        default=[],
        metavar="MODULE_OR_PATH",
        help="load a plugin module (dotted name, also looked up in the current directory, or .py file) "
        "before running; repeatable, and may also follow the sub-command",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"on an error, print the Python traceback too (or set {DEBUG_ENV}=1); may follow the sub-command",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    command_manager().hook.zoo_add_commands(subparsers=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not os.environ.get("ZOO_SHOW_WARNINGS"):
        warnings.filterwarnings("ignore", category=UserWarning, module="timm")
        # failed plugins are reported once, by the command, as plain lines (not as Python warnings)
        warnings.filterwarnings("ignore", message="zoo plugin ")
    args = None
    debug, argv = _split_debug(argv)
    try:
        configure_threads()  # ZOO_NUM_THREADS / OMP_NUM_THREADS / cores per local rank (zoo.runtime.threads)
        plugins, argv = _split_plugins(argv)
        command_manager()  # the built-in commands join right after the entry points, before any --plugin
        _load_plugins(plugins)
        parser = build_parser()
        args = parser.parse_args(argv)
        args.plugins = [s if _is_module_name(s) else os.path.abspath(s) for s in plugins]  # for jobs elsewhere
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        rc = int(args.func(args) or 0)
        _warn_failed_plugins()
        return rc
    except ZooError as exc:
        if debug:
            traceback.print_exc()
        print(f"zoo: error: {exc}", file=sys.stderr)
        if args is not None:
            _warn_failed_plugins()
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        stop_adapting()  # a program that called main() goes on under its own thread rules (zoo.runtime.threads)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
