"""Training curves: ``curves.png`` in every run folder (redrawn by ``zoo.training.monitor`` at each
validation) and ``zoo curves RUN [RUN ...]`` to overlay runs.

What is drawn, from ``log.jsonl``: training loss (raw, faint, and smoothed), learning rate (from 0, each
tick label with as many digits as it takes to tell the ticks apart), validation CIDEr-D (×100) and, when
the log has them, the SCST sample reward: its mean (``reward``) with a band of ± ``reward_std`` (the
spread of the samples' rewards around their image's mean: what the baseline leaves for the gradient; when
it collapses the samples are all alike and SCST stops learning), and the baseline only where it differs
from the mean reward: the greedy caption's reward (``baseline=greedy``). The NSC baseline (the mean of
each sample's image's other samples) averages to the mean reward exactly, so a line of it would hide
under the reward's and say nothing; logs written before ``reward_std`` existed log it anyway and it is
left out. The top row is against training steps, the bottom row against
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
    (("reward", "baseline"), "SCST sample reward", 1.0),
)
#: a logged baseline within this of the mean reward at every step is the NSC one (equal by construction)
SAME_AS_REWARD = 1e-9


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


def distinct_labels(values: Sequence[float]) -> list[str]:
    """Tick labels for ``values`` in short scientific notation (``5e-4``, ``1.5e-3``; ``0`` for zero) with
    the fewest significant digits that give every distinct value its own label and read as the value
    itself (1.25e-4, not a rounded 1.3e-4): a fixed one digit printed 1.5e-3 and 2e-3 both as "2e-03"."""
    values = [float(v) for v in values]
    wanted = len({v for v in values})
    span = (max(values) - min(values)) if values else 0.0
    for digits in range(1, 16):
        labels = [_short_e(v, digits) for v in values]
        exact = all(abs(float(lbl) - v) <= 1e-6 * max(span, abs(v)) for lbl, v in zip(labels, values))
        if exact and len(set(labels)) >= wanted:
            return labels
    return [repr(v) for v in values]


def _short_e(v: float, digits: int) -> str:
    if v == 0:
        return "0"
    mantissa, exponent = f"{v:.{digits - 1}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def _lr_formatter() -> Any:
    """A matplotlib Formatter drawing :func:`distinct_labels` (it sees all of an axis' ticks at once)."""
    from matplotlib.ticker import Formatter  # lazy: matplotlib costs ~0.3 s; only drawing needs it

    class DistinctFormatter(Formatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return _short_e(x, 3)

        def format_ticks(self, values: Sequence[float]) -> list[str]:
            return distinct_labels(values)

    return DistinctFormatter()


def _nsc_baseline(entries: Sequence[dict[str, Any]]) -> bool:
    """The log's baseline is the mean reward at every step (NSC): drawing it would say nothing."""
    pairs = [(e["reward"], e["baseline"]) for e in entries
             if isinstance(e.get("reward"), (int, float)) and isinstance(e.get("baseline"), (int, float))]
    return bool(pairs) and all(abs(r - b) <= SAME_AS_REWARD * max(1.0, abs(r)) for r, b in pairs)


def curves_figure(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> Any:
    """A Figure: one column per quantity present in any run, rows against steps and wall time."""
    from matplotlib.ticker import MaxNLocator  # lazy: matplotlib costs ~0.3 s; only drawing needs it

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
                    if k == "baseline" and _nsc_baseline(entries):
                        continue
                    xs, ys = _series(entries, k, x)
                    if not xs:
                        continue
                    drawn = True
                    xs = [v * xscale for v in xs]
                    ys = [v * scale for v in ys]
                    what = _SCST_NAMES.get(k, k)
                    name = label if len(keys) == 1 else f"{label} {what}" if len(runs) > 1 else what
                    if k == "reward":
                        # one legend entry for the bands of all runs: each band has its run's colour
                        _spread_band(ax, entries, x, xscale, colour, not any(c.get_label() == _BAND for c in ax.collections))
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
                ax.set_ylim(bottom=0)  # a schedule is read against 0; a constant rate is not a zoomed-in band
                ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 5, 10]))  # few, round ticks
                ax.yaxis.set_major_formatter(_lr_formatter())
            handles, _ = ax.get_legend_handles_labels()
            if row == 0 and handles and (len(runs) > 1 or len(keys) > 1):
                ax.legend(fontsize=7, loc="best")
    if len(runs) == 1:
        fig.suptitle(runs[0][0], fontsize=11)
    return fig


#: legend names of the SCST panel's series
_SCST_NAMES = {"reward": "mean reward", "baseline": "baseline (greedy caption's reward)"}


_BAND = "± std within an image"


def _spread_band(ax: Any, entries: Sequence[dict[str, Any]], x: str, xscale: float, colour: str, named: bool) -> None:
    """The band reward ± reward_std (where the log has both); ``named``: with the legend entry."""
    pts = [(float(e[x]) * xscale, float(e["reward"]), float(e["reward_std"])) for e in entries
           if all(isinstance(e.get(k), (int, float)) and math.isfinite(e[k]) for k in (x, "reward", "reward_std"))]
    if not pts:
        return
    xs, mean, std = (np.array(v) for v in zip(*pts))
    ax.fill_between(xs, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0, label=_BAND if named else "_band")


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
