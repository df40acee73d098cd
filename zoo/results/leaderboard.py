"""The leaderboard: rank evaluations from the results database and say which differences are real.

Rows are comparable only on the same data set, split and reference captions (CIDEr-D's document
frequencies come from the references being scored), so ``build_leaderboard`` refuses a mix instead of
ranking apples against oranges. Rows of one *system* (same config hash and decoding settings) are seeds:
their scores are shown as mean ± std; evaluating a checkpoint again replaces its earlier row (same sha256),
and different checkpoints that share a seed are separate systems (see ``_split_shared_seeds``). When
decoding settings differ between rows, every export shows them in a decoding column. Every system gets a 95% paired-bootstrap interval over images for its
CIDEr-D difference to the leader (``zoo.evaluation.bootstrap``); a row whose interval contains 0 is marked ≈ (not
significantly different from the leader). Scores are stored on pycocoevalcap's 0–1 scale and shown ×100.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from zoo.errors import ZooError
from zoo.results.database import EvalRecord
from zoo.evaluation.bootstrap import align, average_per_image, is_significant, mean_std, paired_bootstrap

STANDARD_METRICS = ("CIDEr-D", "BLEU-4", "METEOR", "ROUGE-L", "SPICE")
PER_IMAGE_METRIC = "CIDEr-D"  # the only metric with per-image scores in the database
MIN_RESAMPLES = 1000
CONFIDENCE = 0.95
GROUP_BY = ("system", "run")
NOT_SIGNIFICANT = "≈"
_ALIASES = {"cider": "ciderd", "rouge": "rougel", "bleu": "bleu4"}


class LeaderboardError(ZooError):
    """Rows that cannot be ranked together, an unknown metric, too few resamples."""


def _norm(name: str) -> str:
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    return _ALIASES.get(key, key)


def resolve_metric(name: str, rows: Sequence[EvalRecord]) -> str:
    """The recorded metric key ``name`` refers to ("cider", "CIDEr-D", "bleu_4" …), or an error listing
    the metrics the rows have."""
    available = sorted({k for r in rows for k in r.metrics})
    for key in available:
        if _norm(key) == _norm(name):
            return key
    raise LeaderboardError(f"no row has metric {name!r}; recorded metrics: {', '.join(available)}. Pass --metric with one of them.")


@dataclass
class BoardRow:
    """One line of the leaderboard: a system (its seeds aggregated) or a single run. Scores 0–1 scale."""

    name: str
    runs: list[EvalRecord]
    metrics: dict[str, float]
    metrics_std: dict[str, float]
    per_image: dict[str, float]
    rank: int | None = None
    delta: tuple[float, float, float] | None = None  # (row − leader, lo, hi) on the ranking metric
    significant: bool | None = None  # None: the leader, or no interval could be computed

    @property
    def first(self) -> EvalRecord:
        return self.runs[0]

    @property
    def seeds(self) -> int:
        return len(self.runs)

    @property
    def params(self) -> int:
        return self.first.params_encoder + self.first.params_decoder

    @property
    def num_images(self) -> int:
        return self.first.num_images

    def _mean_of(self, attr: str) -> float | None:
        values = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        return sum(values) / len(values) if values else None

    @property
    def train_images_per_s(self) -> float | None:
        return self._mean_of("train_images_per_s")

    @property
    def decode_images_per_s(self) -> float | None:
        return self._mean_of("decode_images_per_s")


# -- building ----------------------------------------------------------------------------------------------
def _refuse_mixed(rows: Sequence[EvalRecord]) -> None:
    groups: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in rows:
        groups[(r.data, r.split, r.references_hash)] += 1
    if len(groups) <= 1:
        return
    lines = [f"  data={d} split={s} references={h[:12]} ({n} rows)" for (d, s, h), n in sorted(groups.items())]
    pairs = {(d, s) for d, s, _ in groups}
    hint = (
        "Pass --data and --split to choose one."
        if len(pairs) > 1
        else "The same data set and split were scored against different reference captions (another annotation "
        "file or image subset); pass --references with one hash prefix."
    )
    raise LeaderboardError(
        "refusing to rank rows from different data sets, splits or reference sets together; scores are only "
        "comparable on the same references. Groups found:\n" + "\n".join(lines) + "\n" + hint
    )


def _decoding_key(r: EvalRecord) -> str:
    return json.dumps(r.decoding, sort_keys=True)


def _dedupe_seeds(runs: list[EvalRecord]) -> tuple[list[EvalRecord], int, int]:
    """One row per checkpoint: evaluating the same checkpoint again must not count as another seed (it
    would shrink the std), so rows with the same checkpoint sha256 are one run and the latest evaluation
    wins. Only rows without a recorded sha256 fall back to the seed (the latest row of a seed wins);
    rows with neither are all kept. Different checkpoints that share a seed are all kept here:
    :func:`_split_shared_seeds` decides what they are. Returns the kept rows and how many were dropped
    as re-evaluations of a checkpoint and of a seed."""
    latest: dict[Any, int] = {}
    for i, r in enumerate(runs):
        if r.checkpoint_sha256:
            key: Any = ("ckpt", r.checkpoint_sha256)
        elif r.seed is not None:
            key = ("seed", r.seed)
        else:
            key = ("row", i)
        latest[key] = i  # runs are in insertion order, so later ones replace earlier
    kept = [runs[i] for i in sorted(latest.values())]
    dropped = [r for r in runs if not any(r is k for k in kept)]
    by_checkpoint = sum(1 for r in dropped if r.checkpoint_sha256)
    return kept, by_checkpoint, len(dropped) - by_checkpoint


def _checkpoint_file(r: EvalRecord) -> str:
    return Path(r.checkpoint_path).name if r.checkpoint_path else ""


def _run_id(r: EvalRecord) -> str | None:
    """The training run a row's checkpoint came from, as the checkpoint itself says (``extra``; None for
    rows of checkpoints that do not record it)."""
    value = r.extra.get("run_id") if isinstance(r.extra, dict) else None
    return value if isinstance(value, str) and value else None


def _training_regime(r: EvalRecord) -> str | None:
    value = r.extra.get("train_hash") if isinstance(r.extra, dict) else None
    return value if isinstance(value, str) and value else None


def _shares_a_seed(runs: list[EvalRecord]) -> bool:
    """Whether some rows are not independent draws: they share a seed, or come from one training run (by
    the run id inside their checkpoints: the best and last files of a run, wherever they were copied)."""
    seeds = [r.seed for r in runs if r.seed is not None]
    ids = [i for i in map(_run_id, runs) if i is not None]
    return len(seeds) != len(set(seeds)) or len(ids) != len(set(ids))


def _split_shared_seeds(runs: list[EvalRecord]) -> list[list[EvalRecord]]:
    """The systems in one (config, decoding) group once re-evaluations are gone. Normally one: its runs are
    its seeds. When different checkpoints share a seed or a training run (``best`` and ``last`` of one run:
    the run id inside each checkpoint says so, wherever the files were copied; or two training regimes of
    one model config), they become separate systems, not extra seeds: the ± column and the
    seed count describe independent training runs, and two checkpoints of one seed are not independent
    (pooling best with last would understate the std), nor is a regime with another schedule another
    draw of the same system. Keeping them apart also keeps the paired bootstrap about one model's
    per-image scores instead of an average over models that were never meant to be averaged.

    Split first by checkpoint file name (``best.safetensors`` over all seeds is one system, ``last`` another);
    any part where a seed still repeats is shown one checkpoint per row."""
    if not _shares_a_seed(runs):
        return [runs]
    by_file: dict[str, list[EvalRecord]] = defaultdict(list)
    for r in runs:
        by_file[_checkpoint_file(r)].append(r)
    out: list[list[EvalRecord]] = []
    for part in by_file.values():
        if _shares_a_seed(part):
            out.extend([r] for r in part)
        else:
            out.append(part)
    return out


def _run_label(runs: list[EvalRecord]) -> str:
    r = runs[0]
    if len(runs) == 1:
        if r.run_name:
            return r.run_name
        if r.checkpoint_path:
            return r.checkpoint_path
    return f"row {r.id}" if r.id is not None else ""


def _disambiguate(groups: list[list[EvalRecord]]) -> list[str]:
    """Display names: the system name, plus what tells apart groups sharing it (config hash, decoding,
    checkpoint file, and for single checkpoints their run)."""
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, runs in enumerate(groups):
        by_name[runs[0].system].append(i)
    names = [runs[0].system for runs in groups]
    for name, idx in by_name.items():
        if len(idx) < 2:
            continue
        hashes = {groups[i][0].config_hash for i in idx}
        objectives = {groups[i][0].objective for i in idx}
        short = {o.split("(")[0] for o in objectives}
        regimes = {_training_regime(groups[i][0]) for i in idx}
        decodings = [groups[i][0].decoding for i in idx]
        varying = sorted({k for d in decodings for k in d if len({json.dumps(x.get(k)) for x in decodings}) > 1})
        files = [{_checkpoint_file(r) for r in groups[i]} for i in idx]
        file_of = [next(iter(f)) if len(f) == 1 else "" for f in files]
        files_vary = len(set(file_of)) > 1
        parts_of = []
        for i, file in zip(idx, file_of):
            first = groups[i][0]
            parts = [f"#{first.config_hash[:7]}"] if len(hashes) > 1 else []
            if len(objectives) > 1:  # the objective's name, or its whole signature when names repeat
                parts.append(first.objective.split("(")[0] if len(short) == len(objectives) else first.objective)
            if len(regimes) > 1:
                parts.append(f"train #{(_training_regime(first) or 'unrecorded')[:7]}")
            parts += [f"{k}={first.decoding.get(k)}" for k in varying]
            if files_vary and file:
                parts.append(file)
            parts_of.append(parts)
        # groups still alike (the same checkpoint file of one seed in two run folders): name their run
        seen: dict[tuple[str, ...], int] = defaultdict(int)
        for parts in parts_of:
            seen[tuple(parts)] += 1
        for i, parts in zip(idx, parts_of):
            if seen[tuple(parts)] > 1:
                label = _run_label(groups[i])
                parts = parts + ([label] if label else [])
            names[i] = f"{name} ({', '.join(parts)})" if parts else name
    return names


def _run_names(rows: Sequence[EvalRecord]) -> list[str]:
    names = [r.run_name or (f"{r.system} seed={r.seed}" if r.seed is not None else r.system) for r in rows]
    counts: dict[str, int] = defaultdict(int)
    for n in names:
        counts[n] += 1
    return [f"{n} #{r.id}" if counts[n] > 1 and r.id is not None else n for n, r in zip(names, rows)]


def _summarise(name: str, runs: list[EvalRecord]) -> BoardRow:
    keys = sorted({k for r in runs for k in r.metrics})
    metrics, stds = {}, {}
    for k in keys:
        values = [r.metrics[k] for r in runs if k in r.metrics]
        metrics[k], stds[k] = mean_std(values)
    per_image = average_per_image([r.per_image_cider for r in runs if r.per_image_cider])
    return BoardRow(name=name, runs=runs, metrics=metrics, metrics_std=stds, per_image=per_image)


def build_leaderboard(
    rows: Iterable[EvalRecord],
    metric: str = "CIDEr-D",
    resamples: int = 1000,
    group_by: str = "system",
    seed: int = 0,
) -> "Leaderboard":
    """Group ``rows`` into systems (or keep single runs with ``group_by='run'``), rank by ``metric`` and
    compute each row's 95% paired-bootstrap interval for its difference to the leader."""
    rows = list(rows)
    if not rows:
        raise LeaderboardError("no results to rank: the database has no matching rows. Run `zoo eval` first, or check --data/--split.")
    if group_by not in GROUP_BY:
        raise LeaderboardError(f"--group-by must be one of {', '.join(GROUP_BY)}, got {group_by!r}")
    if resamples < MIN_RESAMPLES:
        raise LeaderboardError(f"--resamples must be at least {MIN_RESAMPLES} for a stable 95% interval, got {resamples}")
    _refuse_mixed(rows)
    metric = resolve_metric(metric, rows)
    notes: list[str] = []

    if group_by == "run":
        board = [_summarise(n, [r]) for n, r in zip(_run_names(rows), rows)]
    else:
        grouped: dict[tuple[str, str, str, str], list[EvalRecord]] = defaultdict(list)
        for r in rows:  # seeds of one system: one model config, objective (XE and SCST: two systems),
            # decoding and training regime
            grouped[(r.config_hash, r.objective, _decoding_key(r), _training_regime(r) or "")].append(r)
        groups = []
        for runs in grouped.values():
            kept, same_checkpoint, same_seed = _dedupe_seeds(runs)
            for dropped, what in ((same_checkpoint, "checkpoint"), (same_seed, "seed")):
                if dropped:
                    notes.append(
                        f"{runs[0].system}: {dropped} earlier evaluation(s) of the same {what} ignored "
                        f"(--group-by run shows every run)"
                    )
            parts = _split_shared_seeds(kept)
            if len(parts) > 1:
                notes.append(
                    f"{runs[0].system}: different checkpoints share a seed, so they are shown as separate "
                    f"systems (by checkpoint file or run), not averaged as seeds"
                )
            groups.extend(parts)
        board = [_summarise(n, g) for n, g in zip(_disambiguate(groups), groups)]

    ranked = sorted((b for b in board if metric in b.metrics), key=lambda b: (-b.metrics[metric], b.name))
    unranked = sorted((b for b in board if metric not in b.metrics), key=lambda b: b.name)
    if unranked:
        notes.append(f"not ranked (no {metric} recorded): {', '.join(b.name for b in unranked)}")
    for i, b in enumerate(ranked, 1):
        b.rank = i
    lb = Leaderboard(
        rows=ranked + unranked,
        metric=metric,
        data=rows[0].data,
        split=rows[0].split,
        references_hash=rows[0].references_hash,
        resamples=resamples,
        group_by=group_by,
        notes=notes,
    )
    varying = lb.varying_decoding
    if varying:
        lb.notes.append(
            f"decoding settings differ between rows ({', '.join(varying)}; see the decoding column): scores "
            f"depend on them, so a gap may come from decoding rather than the model"
        )
    _compare_to_leader(lb, seed)
    return lb


def _compare_to_leader(lb: Leaderboard, seed: int) -> None:
    ranked = [b for b in lb.rows if b.rank is not None]
    if not ranked:
        return
    leader = ranked[0]
    bootstrap = lb.metric == PER_IMAGE_METRIC
    if not bootstrap and len(ranked) > 1:
        lb.notes.append(
            f"Δ for {lb.metric} is a plain difference without interval: per-image scores (needed for the "
            f"bootstrap) are recorded for {PER_IMAGE_METRIC} only"
        )
    missing = []
    for b in ranked[1:]:
        if bootstrap and len(leader.per_image) >= 2 and len(b.per_image) >= 2:
            ours, theirs, ids = align(b.per_image, leader.per_image)
            if len(ids) >= 2:
                mean, lo, hi = paired_bootstrap(ours, theirs, resamples=lb.resamples, seed=seed, alpha=1 - CONFIDENCE)
                b.delta = (mean, lo, hi)
                b.significant = is_significant(lo, hi)
                if len(ids) < max(len(b.per_image), len(leader.per_image)):
                    lb.notes.append(f"{b.name}: compared with the leader on the {len(ids)} images both scored")
                continue
        diff = b.metrics[lb.metric] - leader.metrics[lb.metric]
        b.delta = (diff, float("nan"), float("nan"))
        if bootstrap:
            missing.append(b.name)
    if bootstrap and missing:
        lb.notes.append(f"no per-image CIDEr-D recorded, so no interval for: {', '.join(missing)}")


# -- formatting helpers ------------------------------------------------------------------------------------
def _x100(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v * 100:.{digits}f}"


def _speed(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def _has_interval(b: BoardRow) -> bool:
    return b.delta is not None and b.delta[1] == b.delta[1]  # NaN marks "no interval"


def _delta_text(b: BoardRow) -> str:
    if b.rank == 1 or b.delta is None:
        return "—"
    mean, lo, hi = b.delta
    if not _has_interval(b):
        return f"{mean * 100:+.1f}"
    text = f"{mean * 100:+.1f} [{lo * 100:+.1f}, {hi * 100:+.1f}]"
    return f"{text} {NOT_SIGNIFICANT}" if b.significant is False else text


@dataclass
class _Column:
    header: str
    text: Callable[[BoardRow], str]
    value: Callable[[BoardRow], Any]  # for sorting the HTML table; None sorts last
    numeric: bool = True


@dataclass
class Leaderboard:
    """A ranked board for one (data set, split, reference set); render with ``to_*`` or ``plot``."""

    rows: list[BoardRow]
    metric: str
    data: str
    split: str
    references_hash: str
    resamples: int
    group_by: str = "system"
    notes: list[str] = field(default_factory=list)

    # -- shape ---------------------------------------------------------------------------------------------
    @property
    def metric_columns(self) -> list[str]:
        """The ranking metric first, then the standard metrics any row has."""
        present = {k for b in self.rows for k in b.metrics}
        return [self.metric] + [m for m in STANDARD_METRICS if m in present and m != self.metric]

    @property
    def varying_decoding(self) -> list[str]:
        """The decoding settings (beam_size, max_len, length_penalty, …) that differ between rows; the
        exports then show every row's values for them, in a decoding column."""
        decodings = [b.first.decoding for b in self.rows]
        keys = sorted({k for d in decodings for k in d})
        return [k for k in keys if len({json.dumps(d.get(k), sort_keys=True) for d in decodings}) > 1]

    @property
    def varying_objective(self) -> bool:
        """Whether rows were trained with different objectives (``xe``, ``scst(...)``): the exports then
        show each row's objective signature in an objective column."""
        return len({b.first.objective for b in self.rows}) > 1

    def decoding_text(self, b: BoardRow) -> str:
        """``b``'s values of the varying decoding settings, e.g. ``beam_size=1, max_len=20`` (— unset)."""
        d = b.first.decoding
        return ", ".join(f"{k}={d[k] if k in d else '—'}" for k in self.varying_decoding)

    @property
    def leader(self) -> BoardRow | None:
        return self.rows[0] if self.rows and self.rows[0].rank == 1 else None

    def _columns(self) -> list[_Column]:
        m = self.metric

        def main(b: BoardRow) -> str:
            if m not in b.metrics:
                return "—"
            text = _x100(b.metrics[m])
            return f"{text} ± {_x100(b.metrics_std[m])}" if b.seeds > 1 else text

        cols = [
            _Column("rank", lambda b: str(b.rank) if b.rank else "—", lambda b: b.rank),
            _Column("system", lambda b: b.name, lambda b: b.name, numeric=False),
        ]
        if self.varying_decoding:
            cols.append(_Column("decoding", self.decoding_text, self.decoding_text, numeric=False))
        if self.varying_objective:
            cols.append(_Column("objective", lambda b: b.first.objective, lambda b: b.first.objective, numeric=False))
        cols += [
            _Column(f"{m} ×100", main, lambda b: b.metrics.get(m)),
            _Column(
                f"Δ to leader [{CONFIDENCE:.0%} CI]",
                _delta_text,
                lambda b: b.delta[0] if b.delta else (0.0 if b.rank == 1 else None),
            ),
        ]
        for k in self.metric_columns[1:]:
            cols.append(_Column(k, lambda b, k=k: _x100(b.metrics.get(k)), lambda b, k=k: b.metrics.get(k)))
        cols += [
            _Column("params (M)", lambda b: f"{b.params / 1e6:.1f}" if b.params else "—", lambda b: b.params or None),
            _Column("train img/s", lambda b: _speed(b.train_images_per_s), lambda b: b.train_images_per_s),
            _Column("decode img/s", lambda b: _speed(b.decode_images_per_s), lambda b: b.decode_images_per_s),
            _Column("seeds", lambda b: str(b.seeds), lambda b: b.seeds),
            _Column("images", lambda b: str(b.num_images), lambda b: b.num_images),
        ]
        return cols

    def title(self) -> str:
        return (
            f"data={self.data} split={self.split} references={self.references_hash[:12]} "
            f"({self.rows[0].num_images if self.rows else 0} images), ranked by {self.metric}"
        )

    def legend(self) -> list[str]:
        lines = [
            "Scores ×100 (pycocoevalcap computes 0–1; CIDEr-D 0–10). ± is the std over seeds.",
            f"Δ: difference to the leader ×100 with a {CONFIDENCE:.0%} paired-bootstrap interval over images "
            f"({self.resamples} resamples); {NOT_SIGNIFICANT} = not significantly different from the leader.",
        ]
        return lines + [f"Note: {n}" for n in self.notes]

    # -- text exports --------------------------------------------------------------------------------------
    def to_table(self) -> str:
        """A plain-text table for the terminal."""
        cols = self._columns()
        cells = [[c.header for c in cols]] + [[c.text(b) for c in cols] for b in self.rows]
        delta = next(i for i, c in enumerate(cols) if c.header.startswith("Δ"))
        for row in cells[1:]:  # keep intervals aligned whether or not they carry the ≈ mark
            if row[delta].endswith("]"):
                row[delta] += " " * (len(NOT_SIGNIFICANT) + 1)
        widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]

        def line(row: list[str]) -> str:
            return "  ".join(
                (v.rjust(w) if c.numeric else v.ljust(w)) for v, w, c in zip(row, widths, cols)
            ).rstrip()

        out = [self.title(), line(cells[0]), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in cells[1:]]
        return "\n".join(out + [""] + self.legend()) + "\n"

    def to_markdown(self) -> str:
        cols = self._columns()

        def esc(v: str) -> str:
            """A cell's text as literal text: no HTML (<, >, &), no row break (newlines), no column break (|)."""
            v = html.escape(v, quote=False)
            v = " ".join(v.splitlines())
            return v.replace("|", "\\|")

        out = [f"**Leaderboard** — {esc(self.title())}", ""]
        out.append("| " + " | ".join(esc(c.header) for c in cols) + " |")
        out.append("|" + "|".join("---:" if c.numeric else ":---" for c in cols) + "|")
        for b in self.rows:
            out.append("| " + " | ".join(esc(c.text(b)) for c in cols) + " |")
        out.append("")
        out += [f"{esc(line)}  " for line in self.legend()]
        return "\n".join(out) + "\n"

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per row: scores ×100 under ``*_x100`` keys, full precision, plus what
        identifies the system and its runs (config hash, decoding, checkpoints, versions)."""
        out = []
        for b in self.rows:
            first = b.first
            delta = None
            if b.delta is not None:
                delta = {"mean": b.delta[0] * 100}
                if _has_interval(b):
                    delta.update(lo=b.delta[1] * 100, hi=b.delta[2] * 100)
            out.append(
                {
                    "rank": b.rank,
                    "system": b.name,
                    "encoder": {"name": first.encoder, "options": first.encoder_options},
                    "decoder": {"name": first.decoder, "options": first.decoder_options},
                    "tokenizer": {"name": first.tokenizer, "options": first.tokenizer_options},
                    "config_hash": first.config_hash,
                    "decoding": first.decoding,
                    "objective": first.objective,
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
                            "git_commit": r.git_commit,
                            "versions": r.versions,
                            "device": r.device,
                        }
                        for r in b.runs
                    ],
                }
            )
        return out

    def to_json(self) -> str:
        doc = {
            "format": "caption-zoo-leaderboard/1",
            "data": self.data,
            "split": self.split,
            "references_hash": self.references_hash,
            "metric": self.metric,
            "scale": "x100 (pycocoevalcap scores multiplied by 100)",
            "confidence": CONFIDENCE,
            "resamples": self.resamples,
            "group_by": self.group_by,
            "notes": self.notes,
            "rows": self.records(),
        }
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"

    def to_csv(self) -> str:
        metrics = self.metric_columns
        header = ["rank", "system", "decoding", "objective", "seeds", "images"]
        header += [f"{m}_x100" for m in metrics] + [f"{self.metric}_std_x100"]
        header += ["delta_x100", "delta_lo_x100", "delta_hi_x100", "significant"]
        header += ["params_encoder", "params_decoder", "train_images_per_s", "decode_images_per_s", "config_hash"]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        for b, rec in zip(self.rows, self.records()):
            delta = rec["delta_x100"] or {}
            w.writerow(
                [b.rank or "", b.name, json.dumps(rec["decoding"], sort_keys=True), rec["objective"], b.seeds,
                 b.num_images]
                + [_blank(rec["metrics_x100"].get(m)) for m in metrics]
                + [_blank(rec["metrics_std_x100"].get(self.metric))]
                + [_blank(delta.get("mean")), _blank(delta.get("lo")), _blank(delta.get("hi"))]
                + ["" if b.significant is None else str(b.significant).lower()]
                + [rec["params_encoder"], rec["params_decoder"]]
                + [_blank(b.train_images_per_s), _blank(b.decode_images_per_s), rec["config_hash"]]
            )
        return buf.getvalue()

    # -- plot and HTML -------------------------------------------------------------------------------------
    def plot_png(self, dpi: int = 120) -> bytes:
        buf = io.BytesIO()
        self._figure().savefig(buf, format="png", dpi=dpi, metadata={"Software": None}, **_WHOLE_FIGURE)
        return buf.getvalue()

    def plot(self, path: str | Path) -> Path:
        """Save the two-panel plot (score vs parameters, score vs decoding speed); format from the suffix."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._figure().savefig(path, dpi=150, **_WHOLE_FIGURE)
        except ValueError as exc:  # matplotlib: unknown format
            raise LeaderboardError(f"cannot write plot {path}: {exc}. Use a .png, .svg or .pdf file name.") from exc
        return path

    def _figure(self) -> Any:
        """A matplotlib Figure on the Agg canvas, made without pyplot, so no global backend is changed
        and a notebook user's interactive backend is left alone."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(11, 4.6), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2, sharey=True)
        ranked = [b for b in self.rows if b.rank is not None]
        panels = (
            ("parameters (M)", lambda b: b.params / 1e6 if b.params else None),
            ("decoding speed (images/s)", lambda b: b.decode_images_per_s),
        )
        for ax, (xlabel, getx) in zip(axes, panels):
            pts = [(getx(b), b) for b in ranked if getx(b) is not None]
            xs = [x for x, _ in pts]
            log_x = bool(xs) and min(xs) > 0 and max(xs) / min(xs) > 20
            if log_x:
                ax.set_xscale("log")
            for x, b in pts:
                y = b.metrics[self.metric] * 100
                err = b.metrics_std[self.metric] * 100 if b.seeds > 1 else None
                leader = b.rank == 1
                hollow = b.significant is False
                ax.errorbar(
                    x, y, yerr=err, fmt="*" if leader else "o", markersize=12 if leader else 7,
                    color="C3" if leader else "C0", mfc="white" if hollow else None, capsize=3,
                )
                # labels point into the panel (left of the points in its right half), long names wrapped,
                # so they stay inside the panel instead of running off the figure's edge
                right_half = _position(x, xs, log_x) > 0.5
                ax.annotate(
                    _wrap_label(b.name), (x, y), textcoords="offset points", xytext=(-6 if right_half else 6, 4),
                    ha="right" if right_half else "left", va="bottom", fontsize=8,
                )
            if not pts:
                ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
            ax.margins(x=0.2, y=0.15)  # room for the labels beside the points
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(f"{self.metric} ×100")
        fig.suptitle(
            f"{self.data} / {self.split}: {self.metric} ×100 (★ leader, hollow ≈ not significantly different)",
            fontsize=10,
        )
        return fig

    def to_html(self, plot_png: bytes | None = None, images: Any = None) -> str:
        """One self-contained page (:mod:`zoo.views.leaderboard_page`): the sortable table, the plot embedded as a
        data URI, and a drill-down from each system to its captions image by image, two systems side by
        side. ``images``: ``ResultsDB.images(self.references_hash)``, for thumbnails and references. No
        external URL, so it works offline and as an attachment."""
        from zoo.views.leaderboard_page import render

        return render(self, plot_png, images)


# saved plots hold every label: the bounding box grows to whatever was drawn (a label at a panel's edge)
_WHOLE_FIGURE = {"bbox_inches": "tight", "pad_inches": 0.1}
_LABEL_WIDTH = 28  # characters per line of a point's label


def _position(x: float, xs: list[float], log_x: bool) -> float:
    """Where ``x`` lies between the smallest and largest of ``xs`` (0 to 1; 0.5 when they are all equal)."""
    import math

    f = math.log10 if log_x else (lambda v: v)
    lo, hi = f(min(xs)), f(max(xs))
    return 0.5 if hi == lo else (f(x) - lo) / (hi - lo)


def _wrap_label(name: str, width: int = _LABEL_WIDTH) -> str:
    """A system name on lines of about ``width`` characters, broken after ``+`` or before a space (never
    inside a part's own name), so a long name stays in its panel."""
    import re

    pieces = [p for p in re.split(r"(?<=\+)|(?= )", name) if p]
    lines: list[str] = []
    for piece in pieces:
        if lines and len(lines[-1]) + len(piece) <= width:
            lines[-1] += piece
        else:
            lines.append(piece.lstrip() if lines else piece)
    return "\n".join(lines)


def _blank(v: Any) -> Any:
    return "" if v is None else v
