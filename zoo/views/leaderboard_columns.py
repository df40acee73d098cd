"""What every view of a leaderboard shows: its columns (header, each row's text, a value to sort by),
its title line and its legend. The terminal table, Markdown, CSV (``zoo.views.leaderboard``) and the HTML
page (``zoo.views.leaderboard_page``) all draw from these, so they say the same thing.

Scores are stored on pycocoevalcap's 0–1 scale and shown ×100; a row whose interval to the leader contains 0
is marked ``NOT_SIGNIFICANT`` (≈). The board itself (``zoo.results.leaderboard.Leaderboard``) is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from zoo.results.leaderboard import BoardRow, Leaderboard

NOT_SIGNIFICANT = "≈"


@dataclass
class Column:
    header: str
    text: Callable[["BoardRow"], str]
    value: Callable[["BoardRow"], Any]  # for sorting the HTML table; None sorts last
    numeric: bool = True
    #: an abbreviation of ``text`` for the page, which shows the whole text on hover (None: ``text`` itself)
    short: Callable[["BoardRow"], str] | None = None


def x100(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v * 100:.{digits}f}"


def speed(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def has_interval(b: "BoardRow") -> bool:
    return b.delta is not None and b.delta[1] == b.delta[1]  # NaN marks "no interval"


def delta_text(b: "BoardRow") -> str:
    if b.rank == 1 or b.delta is None:
        return "—"
    mean, lo, hi = b.delta
    if not has_interval(b):
        return f"{mean * 100:+.1f}"
    text = f"{mean * 100:+.1f} [{lo * 100:+.1f}, {hi * 100:+.1f}]"
    return f"{text} {NOT_SIGNIFICANT}" if b.significant is False else text


def decoding_text(board: "Leaderboard", b: "BoardRow") -> str:
    """``b``'s values of the board's varying decoding settings, e.g. ``beam_size=1, max_len=20`` (— unset)."""
    d = b.first.decoding
    return ", ".join(f"{k}={d[k] if k in d else '—'}" for k in board.varying_decoding)


def parse_signature(signature: str) -> tuple[str, dict[str, str]]:
    """An objective signature (``scst(cider-d, baseline=mean, n=5)``) as its name and arguments; positional
    arguments get keys ``#0``, ``#1`` …; commas inside brackets stay inside their argument; a bare name
    (``xe``) has none."""
    m = re.fullmatch(r"\s*([^()]*?)\s*\((.*)\)\s*", signature or "", re.S)
    if not m:
        return (signature or "").strip(), {}
    args: dict[str, str] = {}
    depth, cur = 0, ""
    for ch in m.group(2) + ",":
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            arg, cur = cur.strip(), ""
            key, eq, value = arg.partition("=")
            if eq and re.fullmatch(r"[A-Za-z_][\w.-]*", key.strip()):
                args[key.strip()] = value.strip()
            elif arg:
                args[f"#{len(args)}"] = arg
        else:
            cur += ch
    return m.group(1), args


def objective_short(board: "Leaderboard", b: "BoardRow") -> str:
    """``b``'s objective as its name and only the arguments that differ from the other rows' objectives of
    that name (``scst``, ``scst (baseline=greedy)``): the whole signature is the page's hover text."""
    name, args = parse_signature(b.first.objective)
    same_name = [a for n, a in (parse_signature(r.first.objective) for r in board.rows) if n == name]
    differ = [v if k.startswith("#") else f"{k}={v}" for k, v in args.items()
              if len({a.get(k) for a in same_name}) > 1]
    return f"{name} ({', '.join(differ)})" if differ else name


def columns(board: "Leaderboard") -> list[Column]:
    """The board's columns: rank, system, decoding and objective (when they vary), the ranking metric
    (mean ± std over seeds), Δ to the leader, the other metrics, parameters, speeds, seeds, images."""
    m = board.metric

    def main(b: "BoardRow") -> str:
        if m not in b.metrics:
            return "—"
        text = x100(b.metrics[m])
        return f"{text} ± {x100(b.metrics_std[m])}" if b.seeds > 1 else text

    def decoding(b: "BoardRow") -> str:
        return decoding_text(board, b)

    cols = [
        Column("rank", lambda b: str(b.rank) if b.rank else "—", lambda b: b.rank),
        Column("system", lambda b: b.name, lambda b: b.name, numeric=False),
    ]
    if board.varying_decoding:
        cols.append(Column("decoding", decoding, decoding, numeric=False))
    if board.varying_objective:
        cols.append(Column("objective", lambda b: b.first.objective, lambda b: b.first.objective, numeric=False,
                           short=lambda b: objective_short(board, b)))
    cols += [
        Column(f"{m} ×100", main, lambda b: b.metrics.get(m)),
        Column(
            f"Δ to leader [{board.confidence:.0%} CI]",
            delta_text,
            lambda b: b.delta[0] if b.delta else (0.0 if b.rank == 1 else None),
        ),
    ]
    for k in board.metric_columns[1:]:
        cols.append(Column(k, lambda b, k=k: x100(b.metrics.get(k)), lambda b, k=k: b.metrics.get(k)))
    cols += [
        Column("params (M)", lambda b: f"{b.params / 1e6:.1f}" if b.params else "—", lambda b: b.params or None),
        Column("train img/s", lambda b: speed(b.train_images_per_s), lambda b: b.train_images_per_s),
        Column("decode img/s", lambda b: speed(b.decode_images_per_s), lambda b: b.decode_images_per_s),
        Column("seeds", lambda b: str(b.seeds), lambda b: b.seeds),
        Column("images", lambda b: str(b.num_images), lambda b: b.num_images),
    ]
    return cols


def title(board: "Leaderboard") -> str:
    return (
        f"data={board.data} split={board.split} references={board.references_hash[:12]} "
        f"({board.rows[0].num_images if board.rows else 0} images), ranked by {board.metric}"
    )


def legend(board: "Leaderboard") -> list[str]:
    lines = [
        "Scores ×100 (pycocoevalcap computes 0–1; CIDEr-D 0–10). ± is the std over seeds.",
        f"Δ: difference to the leader ×100 with a {board.confidence:.0%} paired-bootstrap interval over images "
        f"({board.resamples} resamples); {NOT_SIGNIFICANT} = not significantly different from the leader.",
    ]
    if board.shared_parts:
        shared = ", ".join(f"{part} {name}" for part, name in board.shared_parts.items())
        lines.append(f"Every row has {shared}; names show what tells the rows apart. A system's full identity "
                     f"(every option, objective, hashes, runs): --format json, or click its name on the page.")
    return lines + [f"Note: {n}" for n in board.notes]
