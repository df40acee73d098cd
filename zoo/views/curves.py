"""Training curves: ``curves.png`` in every run folder (redrawn by ``zoo.training.monitor`` at each
validation) and ``zoo curves RUN [RUN ...]`` to overlay runs.

What is drawn, from ``log.jsonl``: training loss (raw, faint, and smoothed), learning rate, validation
CIDEr-D (×100) and, when the log has them (the SCST objective logs ``reward`` and ``baseline``), the
self-critical reward against its baseline. The top row is against training steps, the bottom row against
wall time (``elapsed``, seconds of training, carried across ``--resume``), since "which run is better
per hour" and "per update" are different questions. Log entries without ``elapsed`` (logs written before
it existed) are placed on the wall-time row by interpolation between entries that have it, or left off it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from zoo.errors import ZooError
from zoo.views.figures import agg_figure, check_figure_path, save_figure

CURVES_FILE = "curves.png"
# (log key, panel title, scale): drawn when at least one entry has the key
PANELS = (
    (("loss",), "training loss", 1.0),
    (("lr",), "learning rate", 1.0),
    (("val_cider_d",), "validation CIDEr-D (×100)", 100.0),
    (("reward", "baseline"), "SCST reward / baseline", 1.0),
)


class CurvesError(ZooError):
    """A run folder or log that curves cannot be drawn from; the message names the file."""


def read_log(run: str | Path) -> list[dict[str, Any]]:
    """The entries of ``RUN/log.jsonl`` (``run`` may also be the log file). A torn last line (a run killed
    while writing) is skipped; any other bad line is a CurvesError naming the file and line."""
    path = Path(run)
    log = path / "log.jsonl" if path.is_dir() else path
    if not log.is_file():
        raise CurvesError(
            f"{log} does not exist: give a run folder written by `zoo train` (it holds log.jsonl)"
            if path.is_dir() or path.suffix != ".jsonl" else f"{log} does not exist"
        )
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines):
                break  # the last line of a run killed mid-write
            raise CurvesError(f"{log} line {i} is not JSON ({exc.msg}); the log is damaged") from exc
        if isinstance(entry, dict) and isinstance(entry.get("step"), (int, float)):
            out.append(entry)
    return out


def _series(entries: Sequence[dict[str, Any]], key: str, x: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for e in entries:
        v, xv = e.get(key), e.get(x)
        if isinstance(v, (int, float)) and isinstance(xv, (int, float)) and math.isfinite(v):
            xs.append(float(xv))
            ys.append(float(v))
    return xs, ys


def _with_elapsed(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries with ``elapsed`` filled in by interpolation over steps where it is missing (old logs)."""
    known = [(e["step"], e["elapsed"]) for e in entries if isinstance(e.get("elapsed"), (int, float))]
    if len(known) < 2:
        return list(entries)
    steps, times = zip(*known)
    return [e if "elapsed" in e else {**e, "elapsed": float(np.interp(e["step"], steps, times))} for e in entries]


def _smooth(ys: list[float]) -> list[float]:
    """TensorBoard-style exponential smoothing (debiased, so the first points are not pulled to 0), over
    about a tenth of the points: enough to read a noisy loss, not so much that it lags a short run."""
    weight = min(0.95, max(0.0, 1.0 - 10.0 / len(ys)))
    out, acc = [], 0.0
    for i, y in enumerate(ys, 1):
        acc = weight * acc + (1 - weight) * y
        out.append(acc / (1 - weight**i))
    return out


def curves_figure(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> Any:
    """A Figure: one column per quantity present in any run, rows against steps and wall time."""
    from matplotlib.ticker import FuncFormatter  # lazy: matplotlib costs ~0.3 s; only drawing needs it

    runs = [(label, _with_elapsed(entries)) for label, entries in runs]
    panels = [p for p in PANELS if any(k in e for _, entries in runs for e in entries for k in p[0])]
    if not panels:
        raise CurvesError("nothing to draw: the log has no loss, lr, val_cider_d, reward or baseline entries yet")
    fig = agg_figure(3.3 * len(panels), 5.6)
    axes = fig.subplots(2, len(panels), squeeze=False)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    long_run = max((e.get("elapsed", 0) for _, entries in runs for e in entries), default=0) > 3 * 3600
    for col, (keys, title, scale) in enumerate(panels):
        for row, (x, xlabel) in enumerate((("step", "step"), ("elapsed", "wall time (h)" if long_run else "wall time (min)"))):
            ax = axes[row, col]
            drawn = False
            xscale = 1.0 if x == "step" else (1 / 3600 if long_run else 1 / 60)
            for (label, entries), colour in zip(runs, colours):
                for k, style in zip(keys, ("-", "--")):
                    xs, ys = _series(entries, k, x)
                    if not xs:
                        continue
                    drawn = True
                    xs = [v * xscale for v in xs]
                    ys = [v * scale for v in ys]
                    name = label if len(keys) == 1 else f"{label} {k}" if len(runs) > 1 else k
                    if k == "loss" and len(ys) > 10:
                        ax.plot(xs, ys, color=colour, alpha=0.35, linewidth=0.8)
                        ax.plot(xs, _smooth(ys), color=colour, linestyle=style, linewidth=1.5, label=name)
                    else:
                        marker = "o" if len(xs) < 30 and k != "lr" else None
                        ax.plot(xs, ys, color=colour, linestyle=style, marker=marker, markersize=3, linewidth=1.4, label=name)
            if not drawn:
                why = "no 'elapsed' in the log\n(written before wall time was logged)" if x == "elapsed" else "no entries"
                ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=8, color="0.4", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=10)
            ax.set_xlabel(xlabel, fontsize=9)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
            if keys == ("lr",) and drawn:
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}" if v else "0"))
            handles, _ = ax.get_legend_handles_labels()
            if row == 0 and handles and (len(runs) > 1 or len(keys) > 1):
                ax.legend(fontsize=7, loc="best")
    if len(runs) == 1:
        fig.suptitle(runs[0][0], fontsize=11)
    return fig


def write_curves(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: str | Path) -> Path:
    """Draw ``runs`` ((label, log entries) pairs) into ``path`` (.png, .svg, .pdf), atomically."""
    return save_figure(curves_figure(runs), path, dpi=100, what="curves figure")


def compare_runs(run_dirs: Iterable[str | Path], out: str | Path) -> Path:
    """``zoo curves``: the runs' logs overlaid in one figure, each labelled by its folder name (the
    parent's too when two folders share a name)."""
    check_figure_path(out, "curves figure")
    paths = [Path(r) for r in run_dirs]
    labels = [p.name if [q.name for q in paths].count(p.name) == 1 else f"{p.parent.name}/{p.name}" for p in paths]
    runs = [(label, read_log(p)) for label, p in zip(labels, paths)]
    for (label, entries), p in zip(runs, paths):
        if not entries:
            raise CurvesError(f"{p}: its log.jsonl has no entries yet (the run has not logged a step)")
    return write_curves(runs, out)
