"""The ``zoo`` command line. Sub-commands come from the ``zoo_add_commands`` hook, so plugins can add
their own; ``--plugin MODULE_OR_PATH`` (repeatable, like ``pytest -p``) loads a plugin before anything."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence

from zoo.errors import ZooError


def _preparse_plugins(argv: Sequence[str]) -> list[str]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", "-p", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    return list(known.plugin)


def build_parser() -> argparse.ArgumentParser:
    from zoo import __version__
    from zoo.manager import get_plugin_manager

    parser = argparse.ArgumentParser(
        prog="zoo",
        description="Caption Zoo: image-captioning models by name; train, score on COCO, compare.",
    )
    parser.add_argument("--version", action="version", version=f"caption-zoo {__version__}")
    parser.add_argument(
        "--plugin",
        "-p",
        action="append",
        default=[],
        metavar="MODULE_OR_PATH",
        help="load a plugin module (dotted name or .py file) before running; repeatable",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    get_plugin_manager().hook.zoo_add_commands(subparsers=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not os.environ.get("ZOO_SHOW_WARNINGS"):
        warnings.filterwarnings("ignore", category=UserWarning, module="timm")
        # failed plugins are reported once, by the command, as plain lines (not as Python warnings)
        warnings.filterwarnings("ignore", message="zoo plugin ")
    try:
        from zoo.manager import load_plugin

        for spec in _preparse_plugins(argv):
            load_plugin(spec)
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except ZooError as exc:
        print(f"zoo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
