"""``zoo leaderboard``: rank the evaluations in the results database, with significance against the leader."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.hookspecs import hookimpl

FORMATS = ("table", "md", "csv", "json", "html")
_SUFFIX_FORMATS = {".md": "md", ".markdown": "md", ".csv": "csv", ".json": "json", ".html": "html", ".htm": "html"}


@hookimpl
def zoo_add_commands(subparsers: argparse._SubParsersAction) -> None:
    from zoo.results import add_db_argument

    p = subparsers.add_parser(
        "leaderboard",
        help="rank recorded evaluations (CIDEr-D ×100 by default) with 95%% intervals to the leader",
        description=(
            "Rank the evaluations `zoo eval` recorded. Only rows on one data set, split and reference set are "
            "ranked together; seeds of one system are shown as mean ± std; Δ to the leader comes with a 95% "
            "paired-bootstrap interval over images, and ≈ marks rows not significantly different from it."
        ),
    )
    add_db_argument(p)
    p.add_argument("--data", default=None, help="data set name, e.g. shapes or coco-karpathy")
    p.add_argument("--split", default=None, help="split, e.g. test")
    p.add_argument("--references", default=None, metavar="HASH", help="reference-set hash (a prefix is enough)")
    p.add_argument("--metric", default="CIDEr-D", help="metric to rank by (default CIDEr-D)")
    p.add_argument("--format", choices=FORMATS, default=None, help="output format (default: from --out's suffix, else table)")
    p.add_argument("--out", default=None, metavar="FILE", help="write to FILE instead of standard output")
    p.add_argument("--plot", default=None, metavar="PNG", help="also save the score vs params / speed plot")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (at least 1000; default 1000)")
    p.add_argument("--group-by", choices=("system", "run"), default="system", help="aggregate seeds (system) or list every run")
    p.set_defaults(func=cmd_leaderboard)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from zoo.checkpoint import atomic_write
    from zoo.leaderboard import build_leaderboard
    from zoo.results import ResultsDB

    with ResultsDB(args.db, create=False) as db:
        rows = db.rows(data=args.data, split=args.split)
        where = db.path
    if args.references:
        rows = [r for r in rows if r.references_hash.startswith(args.references.lower())]
    if not rows:
        wanted = ", ".join(
            f"{k}={v}" for k, v in (("data", args.data), ("split", args.split), ("references", args.references)) if v
        )
        print(f"no results in {where}" + (f" for {wanted}" if wanted else "") + "; run `zoo eval` first.", file=sys.stderr)
        return 1
    board = build_leaderboard(rows, metric=args.metric, resamples=args.resamples, group_by=args.group_by)

    fmt = args.format or (_SUFFIX_FORMATS.get(Path(args.out).suffix.lower(), "table") if args.out else "table")
    if args.plot:
        board.plot(args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if fmt == "html":
        text = board.to_html(board.plot_png())
    else:
        text = {"table": board.to_table, "md": board.to_markdown, "csv": board.to_csv, "json": board.to_json}[fmt]()
    if args.out:
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        print(f"wrote {args.out} ({fmt}, {len(board.rows)} rows from {where})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
