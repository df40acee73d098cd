"""``zoo curves RUN [RUN ...] --out cmp.png``: several runs' training curves overlaid (loss, learning rate,
validation CIDEr-D, SCST sample reward with its spread, and a greedy baseline where there is one; against
steps and wall time). Each run folder already has
its own ``curves.png``, redrawn at every validation; this puts runs side by side."""

from __future__ import annotations

import argparse

from zoo.registry.hookspecs import hookimpl
from zoo.views.curves import compare_runs


@hookimpl
def zoo_add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("curves", help="overlay the training curves of run folders in one figure",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders written by `zoo train` (each holds log.jsonl)")
    p.add_argument("--out", default="curves.png", help="figure to write: .png, .svg or .pdf (default curves.png)")
    p.set_defaults(func=cmd_curves)


def cmd_curves(args: argparse.Namespace) -> int:
    print(compare_runs(args.runs, args.out))
    return 0
