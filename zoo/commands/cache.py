"""``zoo cache``: see and clean the on-disk feature cache, as ``pip cache`` and ``huggingface-cli
delete-cache`` do for theirs (a COCO entry is tens of GB, so it must be easy to find and remove)."""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from pathlib import Path
from typing import Any

from zoo.data.feature_cache import default_cache_root, list_entries, remove_abandoned, remove_entry
from zoo.errors import ZooError
from zoo.registry.hookspecs import hookimpl


@hookimpl
def zoo_add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cache",
        help="list or remove cached encoder features",
        description="The feature cache holds a frozen encoder's features per data set (default "
        "$ZOO_FEATURE_CACHE, else ~/.cache/caption-zoo/features). `list` shows every entry; `prune` removes "
        "the leftovers of killed builds and, when asked, entries.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    ls = sub.add_parser("list", help="entries with size, encoder, data set and last use")
    _cache_dir_argument(ls)
    ls.add_argument("--json", action="store_true", help="one JSON object per entry")
    ls.set_defaults(func=cmd_list)
    pr = sub.add_parser(
        "prune",
        help="remove abandoned partial builds, and entries by pattern or age",
        description="Always removes what killed builds left (partial folders whose builder is gone); builds "
        "in progress are never touched. Entries are removed only when selected: --all, or PATTERN(s) "
        "(fnmatch, matched against the entry's folder name, encoder and data set) and/or --older-than.",
    )
    _cache_dir_argument(pr)
    pr.add_argument("patterns", nargs="*", metavar="PATTERN", help="e.g. 'resnet50*' or 'coco-karpathy'")
    pr.add_argument("--older-than", type=float, default=None, metavar="DAYS", help="entries not used for DAYS days")
    pr.add_argument("--all", action="store_true", help="every entry")
    pr.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    pr.set_defaults(func=cmd_prune)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _cache_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="the cache folder (default: $ZOO_FEATURE_CACHE, else ~/.cache/caption-zoo/features)")


def _root(args: argparse.Namespace) -> Path:
    return Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_root()


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def _ago(t: float) -> str:
    s = max(time.time() - t, 0)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= length:
            return f"{s / length:.0f} {unit} ago"
    return "just now"


def _row(e: Any) -> dict[str, Any]:
    return {"name": e.name, "state": e.state, "size_bytes": e.size, "encoder": e.encoder, "dataset": e.dataset,
            "split": e.split, "images": e.images, "dtype": e.dtype,
            "last_used": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(e.last_used)), "path": str(e.path)}


def cmd_list(args: argparse.Namespace) -> int:
    root = _root(args)
    entries = list_entries(root)
    if args.json:
        for e in entries:
            print(json.dumps(_row(e)))
        return 0
    if not entries:
        print(f"the feature cache {root} is empty")
        return 0
    header = ["entry", "size", "encoder", "data set", "images", "last used", "state"]
    rows = [[e.name, human_size(e.size), e.encoder or "?", "/".join(x for x in (e.dataset, e.split) if x) or "?",
             str(e.images) if e.images is not None else "?", _ago(e.last_used), e.state] for e in entries]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    total = sum(e.size for e in entries)
    print(f"{len(entries)} folder(s), {human_size(total)} in {root}")
    return 0


def _selected(e: Any, args: argparse.Namespace) -> bool:
    if args.all:
        return True
    if not args.patterns and args.older_than is None:
        return False
    names = [n for n in (e.name, e.encoder, e.dataset) if n]
    by_name = not args.patterns or any(fnmatch.fnmatchcase(n, p) for p in args.patterns for n in names)
    by_age = args.older_than is None or time.time() - e.last_used > args.older_than * 86400
    return by_name and by_age


def cmd_prune(args: argparse.Namespace) -> int:
    if args.older_than is not None and args.older_than < 0:
        raise ZooError(f"--older-than must be a number of days ≥ 0, got {args.older_than:g}")
    root = _root(args)
    entries = list_entries(root)
    verb = "would remove" if args.dry_run else "removed"
    freed = 0
    abandoned = {p.name for p in remove_abandoned(root, dry_run=True)}
    for e in entries:
        if e.name in abandoned:
            print(f"{verb} {e.name} ({human_size(e.size)}, left by a build that was killed)")
            freed += e.size
    if not args.dry_run:
        remove_abandoned(root)
    chosen = [e for e in entries if e.state in ("complete", "unreadable") and _selected(e, args)]
    for e in chosen:
        if not args.dry_run:
            remove_entry(e)
        print(f"{verb} {e.name} ({human_size(e.size)}, {e.encoder or '?'} on {e.dataset or '?'}, last used {_ago(e.last_used)})")
        freed += e.size
    kept = [e for e in entries if e.name not in abandoned and e not in chosen]
    print(f"{verb} {len(abandoned) + len(chosen)} folder(s), {human_size(freed)}; {len(kept)} kept in {root}")
    building = [e for e in kept if e.state == "building"]
    if building:
        print(f"{len(building)} build(s) in progress left alone", file=sys.stderr)
    if kept and not (args.all or args.patterns or args.older_than is not None):
        print("entries are removed only when selected: --all, a PATTERN, or --older-than DAYS", file=sys.stderr)
    return 0
