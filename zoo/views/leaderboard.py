"""A ranked leaderboard as a terminal table, Markdown, CSV, JSON and a plot.

Each function takes the board (``zoo.results.leaderboard.Leaderboard``, ranked there) and draws it; the
columns, title and legend come from ``zoo.views.leaderboard_columns``, shared with the HTML page
(``zoo.views.leaderboard_page``). ``Leaderboard.to_table`` and its siblings call these. Scores are stored
on pycocoevalcap's 0–1 scale and shown ×100 (the JSON and CSV keys say so: ``*_x100``).
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import LeaderboardError
from zoo.views.figures import agg_figure
from zoo.views.leaderboard_columns import (
    NOT_SIGNIFICANT,
    columns,
    has_interval,
    legend,
    title,
)

if TYPE_CHECKING:
    from zoo.results.leaderboard import BoardRow, Leaderboard

# saved plots hold every label: the bounding box grows to whatever was drawn (a label at a panel's edge)
_WHOLE_FIGURE = {"bbox_inches": "tight", "pad_inches": 0.1}


# -- text ------------------------------------------------------------------------------------------------
def table(board: "Leaderboard") -> str:
    """A plain-text table for the terminal."""
    cols = columns(board)
    cells = [[c.header for c in cols]] + [[c.text(b) for c in cols] for b in board.rows]
    delta = next(i for i, c in enumerate(cols) if c.header.startswith("Δ"))
    for row in cells[1:]:  # keep intervals aligned whether or not they carry the ≈ mark
        if row[delta].endswith("]"):
            row[delta] += " " * (len(NOT_SIGNIFICANT) + 1)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]

    def line(row: list[str]) -> str:
        return "  ".join(
            (v.rjust(w) if c.numeric else v.ljust(w)) for v, w, c in zip(row, widths, cols)
        ).rstrip()

    out = [title(board), line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out + [""] + legend(board)) + "\n"


def markdown(board: "Leaderboard") -> str:
    cols = columns(board)

    def esc(v: str) -> str:
        """A cell's text as literal text: no HTML (<, >, &), no row break (newlines), no column break (|)."""
        v = html.escape(v, quote=False)
        v = " ".join(v.splitlines())
        return v.replace("|", "\\|")

    out = [f"**Leaderboard** — {esc(title(board))}", ""]
    out.append("| " + " | ".join(esc(c.header) for c in cols) + " |")
    out.append("|" + "|".join("---:" if c.numeric else ":---" for c in cols) + "|")
    for b in board.rows:
        out.append("| " + " | ".join(esc(c.text(b)) for c in cols) + " |")
    out.append("")
    out += [f"{esc(line)}  " for line in legend(board)]
    return "\n".join(out) + "\n"


# -- data ------------------------------------------------------------------------------------------------
def records(board: "Leaderboard") -> list[dict[str, Any]]:
    """One JSON-ready dict per row: scores ×100 under ``*_x100`` keys, full precision, plus what
    identifies the system and its runs (config hash, decoding, checkpoints, versions)."""
    out = []
    for b in board.rows:
        first = b.first
        delta = None
        if b.delta is not None:
            delta = {"mean": b.delta[0] * 100}
            if has_interval(b):
                delta.update(lo=b.delta[1] * 100, hi=b.delta[2] * 100)
        out.append(
            {
                "rank": b.rank,
                "system": b.name,
                "system_full": first.system,
                "identity": b.identity,
                "encoder": {"name": first.encoder, "options": first.encoder_options},
                "decoder": {"name": first.decoder, "options": first.decoder_options},
                "tokenizer": {"name": first.tokenizer, "options": first.tokenizer_options},
                "config_hash": first.config_hash,
                "decoding": first.decoding,
                "objective": first.objective,
                "training_regime": first.extra.get("train_hash") if isinstance(first.extra, dict) else None,
                "seeds": b.seeds,
                "num_images": b.num_images,
                "metrics_x100": {k: v * 100 for k, v in b.metrics.items()},
                "metrics_std_x100": {k: v * 100 for k, v in b.metrics_std.items()},
                "delta_x100": delta,
                "significant": b.significant,
                "params_encoder": first.params_encoder,
                "params_decoder": first.params_decoder,
                "train_images_per_s": b.train_images_per_s,
                "decode_images_per_s": b.decode_images_per_s,
                "runs": [
                    {
                        "id": r.id,
                        "run_name": r.run_name,
                        "seed": r.seed,
                        "created_at": r.created_at,
                        "metrics": r.metrics,
                        "checkpoint_path": r.checkpoint_path,
                        "checkpoint_sha256": r.checkpoint_sha256,
                        "run_id": r.extra.get("run_id") if isinstance(r.extra, dict) else None,
                        "git_commit": r.git_commit,
                        "versions": r.versions,
                        "device": r.device,
                    }
                    for r in b.runs
                ],
            }
        )
    return out


def json_text(board: "Leaderboard") -> str:
    doc = {
        "format": "caption-zoo-leaderboard/1",
        "data": board.data,
        "split": board.split,
        "references_hash": board.references_hash,
        "metric": board.metric,
        "scale": "x100 (pycocoevalcap scores multiplied by 100)",
        "confidence": board.confidence,
        "resamples": board.resamples,
        "group_by": board.group_by,
        "shared_parts": board.shared_parts,
        "notes": board.notes,
        "skipped_rows": [{"id": i, "system": system, "problem": problem} for i, system, problem in board.skipped],
        "rows": records(board),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def csv_text(board: "Leaderboard") -> str:
    metrics = board.metric_columns
    header = ["rank", "system", "decoding", "objective", "seeds", "images"]
    header += [f"{m}_x100" for m in metrics] + [f"{board.metric}_std_x100"]
    header += ["delta_x100", "delta_lo_x100", "delta_hi_x100", "significant"]
    header += ["params_encoder", "params_decoder", "train_images_per_s", "decode_images_per_s", "config_hash"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for b, rec in zip(board.rows, records(board)):
        delta = rec["delta_x100"] or {}
        w.writerow(
            [b.rank or "", b.name, json.dumps(rec["decoding"], sort_keys=True), rec["objective"], b.seeds,
             b.num_images]
            + [_blank(rec["metrics_x100"].get(m)) for m in metrics]
            + [_blank(rec["metrics_std_x100"].get(board.metric))]
            + [_blank(delta.get("mean")), _blank(delta.get("lo")), _blank(delta.get("hi"))]
            + ["" if b.significant is None else str(b.significant).lower()]
            + [rec["params_encoder"], rec["params_decoder"]]
            + [_blank(b.train_images_per_s), _blank(b.decode_images_per_s), rec["config_hash"]]
        )
    return buf.getvalue()


def _blank(v: Any) -> Any:
    return "" if v is None else v


# -- the plot --------------------------------------------------------------------------------------------
def plot_png(board: "Leaderboard", dpi: int = 120) -> bytes:
    """The plot as PNG bytes (no software stamp: the same board gives the same bytes), for the page."""
    buf = io.BytesIO()
    figure(board).savefig(buf, format="png", dpi=dpi, metadata={"Software": None}, **_WHOLE_FIGURE)
    return buf.getvalue()


def write_plot(board: "Leaderboard", path: str | Path) -> Path:
    """Save the two-panel plot (score vs parameters, score vs decoding speed); format from the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure(board).savefig(path, dpi=150, **_WHOLE_FIGURE)
    except ValueError as exc:  # matplotlib: unknown format
        raise LeaderboardError(f"cannot write plot {path}: {exc}. Use a .png, .svg or .pdf file name.") from exc
    return path


def figure(board: "Leaderboard") -> Any:
    """A matplotlib Figure on the Agg canvas (``zoo.views.figures.agg_figure``: no pyplot, so no global
    backend is changed and a notebook user's interactive backend is left alone): the ranking metric
    against parameters and against decoding speed, the leader a star, rows not significantly different
    from it hollow, error bars the std over seeds.

    Each point is labelled with its rank (the table's rank column), and a key under the panels names the
    ranks. Rank numbers are placed so that no two labels overlap and none covers a point, even when
    systems sit within a CIDEr-D point of each other with equal parameters (:func:`_place_labels`);
    full names beside the points were an unreadable jumble there."""
    from matplotlib.lines import Line2D  # lazy: matplotlib costs ~0.3 s; only drawing needs it

    fig = agg_figure(11, 4.6)
    axes = fig.subplots(1, 2, sharey=True)
    ranked = [b for b in board.rows if b.rank is not None]
    panels = (
        ("parameters (M)", lambda b: b.params / 1e6 if b.params else None),
        ("decoding speed (images/s)", lambda b: b.decode_images_per_s),
    )
    placed: list[tuple[Any, list[tuple[float, float, "BoardRow"]]]] = []
    for ax, (xlabel, getx) in zip(axes, panels):
        pts = [(getx(b), b) for b in ranked if getx(b) is not None]
        xs = [x for x, _ in pts]
        log_x = bool(xs) and min(xs) > 0 and max(xs) / min(xs) > 20
        if log_x:
            ax.set_xscale("log")
        for x, b in pts:
            y = b.metrics[board.metric] * 100
            err = b.metrics_std[board.metric] * 100 if b.seeds > 1 else None
            leader = b.rank == 1
            hollow = b.significant is False
            ax.errorbar(
                x, y, yerr=err, fmt="*" if leader else "o", markersize=_STAR if leader else _DOT,
                color="C3" if leader else "C0", mfc="white" if hollow else None, capsize=3,
            )
        if not pts:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        ax.margins(x=0.12, y=0.15)  # room for the labels beside the points
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        placed.append((ax, [(x, b.metrics[board.metric] * 100, b) for x, b in pts]))
    axes[0].set_ylabel(f"{board.metric} ×100")
    fig.suptitle(
        f"{board.data} / {board.split}: {board.metric} ×100 (★ leader, hollow ≈ not significantly different; "
        f"numbers: rank)",
        fontsize=10,
    )
    if ranked:  # the key: rank → system
        handles = [Line2D([], [], linestyle="none", marker=f"${b.rank}$", markersize=5 + 2 * len(str(b.rank)),
                          color="black") for b in ranked]
        fig.legend(handles, [b.name for b in ranked], loc="outside lower center", ncols=min(3, len(ranked)),
                   fontsize=8, frameon=False, handletextpad=0.6, columnspacing=2.0)
    fig.draw_without_rendering()  # the layout settles first: labels are placed in its pixels
    fig.set_layout_engine("none")  # and it stays: labels live inside the panels
    renderer = fig.canvas.get_renderer()
    for ax, pts in placed:
        _place_labels(ax, pts, renderer)
    return fig


_DOT, _STAR = 7, 12  # marker sizes (points)
_LABEL_GID = "rank-label"  # the gid of every point's label (tests find them by it)


def _place_labels(ax: Any, pts: list[tuple[float, float, "BoardRow"]], renderer: Any) -> list[Any]:
    """Label each point with its rank where the label overlaps no other label and no point, inside the
    panel: candidate spots on rings of growing distance around the point (right, left, above, below,
    then the diagonals), the first free one wins; a label pushed away from its point gets a thin line to
    it. Deterministic (same board, same picture) and sure to end: the rings grow until the panel's size."""
    from matplotlib.transforms import Bbox  # lazy: as above

    dpi = ax.figure.dpi
    frame = ax.get_window_extent(renderer)
    at = [ax.transData.transform((x, y)) for x, y, _ in pts]
    radius = [(_STAR if b.rank == 1 else _DOT) / 2 * dpi / 72 + 1 for _, _, b in pts]  # pixels
    taken = [Bbox.from_extents(px - r, py - r, px + r, py + r) for (px, py), r in zip(at, radius)]
    labels = []
    for (px, py), (x, y, b), r in zip(at, pts, radius):
        probe = ax.text(x, y, str(b.rank), fontsize=8, fontweight="bold")  # measured, then replaced
        box = probe.get_window_extent(renderer)
        probe.remove()
        w, h = box.width + 2, box.height + 2
        spot = None
        for dx, dy in _candidates(w, h, r, max(frame.width, frame.height)):
            cand = Bbox.from_bounds(px + dx - w / 2, py + dy - h / 2, w, h)
            inside = frame.x0 <= cand.x0 and cand.x1 <= frame.x1 and frame.y0 <= cand.y0 and cand.y1 <= frame.y1
            if inside and not any(cand.overlaps(t) for t in taken):
                spot = (dx, dy, cand)
                break
        if spot is None:  # a panel too small for every label: the last resort is beside the point
            spot = (w, 0.0, Bbox.from_bounds(px + w / 2, py - h / 2, w, h))
        dx, dy, cand = spot
        # a thin line back to its point when the label was pushed away, or sits nearer another point
        cx, cy = px + dx, py + dy
        own = (dx * dx + dy * dy) ** 0.5
        far = own > 1.6 * max(w, h) or any(
            ((cx - qx) ** 2 + (cy - qy) ** 2) ** 0.5 < own for qx, qy in at if (qx, qy) != (px, py))
        line = {"arrowstyle": "-", "color": "0.5", "lw": 0.6, "shrinkA": 0, "shrinkB": 4} if far else None
        labels.append(ax.annotate(
            str(b.rank), (x, y), xytext=(dx * 72 / dpi, dy * 72 / dpi), textcoords="offset points", ha="center",
            va="center", fontsize=8, fontweight="bold", gid=_LABEL_GID, arrowprops=line,
        ))
        taken.append(cand)
    return labels


def _candidates(w: float, h: float, r: float, limit: float) -> Any:
    """Offsets (pixels) from a point of radius ``r`` for a w×h label: rings of growing distance, eight
    directions each, the first ring just clear of the marker."""
    step = max(w, h) * 0.75
    ring = 0
    while ring * step <= limit:
        gap_x, gap_y = w / 2 + r + 2 + ring * step, h / 2 + r + 2 + ring * step
        for ux, uy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1)):
            yield ux * gap_x, uy * gap_y
        ring += 1
