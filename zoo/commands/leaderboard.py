"""``zoo leaderboard``: rank the evaluations in the results database, with significance against the leader."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from zoo.errors import ZooError
from zoo.files import atomic_write
from zoo.registry.hookspecs import hookimpl
from zoo.results.database import ResultsDB, add_db_argument
from zoo.results.leaderboard import build_leaderboard

FORMATS = ("table", "md", "csv", "json", "html")
_SUFFIX_FORMATS = {
    ".txt": "table",
    ".md": "md",
    ".markdown": "md",
    ".csv": "csv",
    ".json": "json",
    ".html": "html",
    ".htm": "html",
}


def output_format(fmt: str | None, out: str | None) -> str:
    """``--format`` if given, else the format ``--out``'s extension names (a name without one: the table).
    An extension that names no format is refused rather than given a text table under a misleading name."""
    if fmt:
        return fmt
    if not out:
        return "table"
    suffix = Path(out).suffix.lower()
    if not suffix:
        return "table"
    if suffix not in _SUFFIX_FORMATS:
        known = ", ".join(f"{s} ({f})" for s, f in _SUFFIX_FORMATS.items())
        raise ZooError(
            f"--out {out}: the extension {suffix!r} names no leaderboard format. The format follows the "
            f"extension: {known}; or pass --format {{{','.join(FORMATS)}}} to write that format under any name."
        )
    return _SUFFIX_FORMATS[suffix]


def _closest_first(groups: list[tuple[str, str, int]], data: str | None, split: str | None) -> list[tuple[str, str, int]]:
    """The data sets and splits that have rows, the most similar to what was asked for first."""
    def similarity(asked: str | None, found: str) -> float:
        return difflib.SequenceMatcher(None, asked.lower(), found.lower()).ratio() if asked else 0.0

    # the data set first (a mistyped name), then the split
    return sorted(groups, key=lambda g: (-similarity(data, g[0]), -similarity(split, g[1]), g[0], g[1]))


@hookimpl
def zoo_add_commands(subparsers: argparse._SubParsersAction) -> None:
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
    p.add_argument("--format", choices=FORMATS, default=None, help="output format (default: from --out's extension: .txt .md .csv .json .html; else table)")
    p.add_argument("--out", default=None, metavar="FILE", help="write to FILE instead of standard output")
    p.add_argument("--plot", default=None, metavar="PNG", help="also save the score vs params / speed plot")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (at least 1000; default 1000)")
    p.add_argument("--group-by", choices=("system", "run"), default="system", help="aggregate seeds (system) or list every run")
    p.set_defaults(func=cmd_leaderboard)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    fmt = output_format(args.format, args.out)  # before reading anything: a bad --out fails at once
    with ResultsDB(args.db, create=False) as db:
        rows = db.rows(data=args.data, split=args.split)
        groups = db.groups()
        where = db.path
    unfiltered = rows
    if args.references:
        rows = [r for r in rows if r.references_hash.startswith(args.references.lower())]
    if not rows:
        wanted = ", ".join(
            f"{k}={v}" for k, v in (("data", args.data), ("split", args.split), ("references", args.references)) if v
        )
        msg = f"no results in {where}" + (f" for {wanted}" if wanted else "")
        if unfiltered:  # only the reference hash matched nothing
            hashes = sorted({r.references_hash[:12] for r in unfiltered})
            msg += f". The reference sets recorded there are: {', '.join(hashes)} (pass one to --references)."
        elif groups:
            listed = ", ".join(
                f"--data {d} --split {s} ({n} row{'s' if n != 1 else ''})"
                for d, s, n in _closest_first(groups, args.data, args.split)
            )
            msg += f". Results exist for: {listed}."
        else:
            msg += "; the database is empty: run `zoo eval` first (it records each evaluation there)."
        print(msg, file=sys.stderr)
        return 1
    board = build_leaderboard(rows, metric=args.metric, resamples=args.resamples, group_by=args.group_by)
    for row_id, system, problem in board.skipped:  # also in the board's notes; said here where it is seen
        print(f"warning: skipped damaged row {row_id} ({system}) of {where}: {problem}", file=sys.stderr)

    if args.plot:
        board.plot(args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if fmt == "html":  # with the thumbnails and references of the images, for the drill-down
        with ResultsDB(args.db, create=False) as db:
            images = db.images(board.references_hash)
        text = board.to_html(board.plot_png(), images)
    else:
        text = {"table": board.to_table, "md": board.to_markdown, "csv": board.to_csv, "json": board.to_json}[fmt]()
    if args.out:
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        print(f"wrote {args.out} ({fmt}, {len(board.rows)} rows from {where})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
