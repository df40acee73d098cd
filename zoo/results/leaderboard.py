"""The leaderboard: rank evaluations from the results database and say which differences are real.

Rows are comparable only on the same data set, split and reference captions (CIDEr-D's document
frequencies come from the references being scored), so ``build_leaderboard`` refuses a mix instead of
ranking apples against oranges. Rows of one *system* (same config hash and decoding settings) are seeds:
their scores are summarised as mean ± std; evaluating a checkpoint again replaces its earlier row (same
sha256), and different checkpoints that share a seed are separate systems (see ``_split_shared_seeds``).
Every system gets a 95% paired-bootstrap interval over images for its CIDEr-D difference to the leader
(``zoo.evaluation.bootstrap``); ``BoardRow.significant`` is False when that interval contains 0 (not
significantly different from the leader). Scores stay on pycocoevalcap's 0–1 scale here. Systems are named
by what tells them apart from the other rows shown (``zoo.results.naming``); each keeps its full identity.
A damaged row (a NaN or text score, a list where a mapping belongs) is skipped and reported
(``Leaderboard.skipped``, the notes), never fatal to the board.

This module ranks; ``zoo.views.leaderboard`` (table, Markdown, CSV, JSON, plot) and
``zoo.views.leaderboard_page`` (the HTML page) draw the ranked ``Leaderboard``: they show scores ×100,
mark rows that are not significantly different with ≈, and add a decoding column when decoding settings
differ between rows.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from zoo.errors import LeaderboardError, ZooError
from zoo.evaluation.bootstrap import (
    align,
    average_per_image,
    is_significant,
    mean_std,
    paired_bootstrap,
)
from zoo.results import naming
from zoo.results.evalrecord import EvalRecord
from zoo.views import leaderboard as views
from zoo.views import leaderboard_page

STANDARD_METRICS = ("CIDEr-D", "BLEU-4", "METEOR", "ROUGE-L", "SPICE")
PER_IMAGE_METRIC = "CIDEr-D"  # the only metric with per-image scores in the database
MIN_RESAMPLES = 1000
CONFIDENCE = 0.95
GROUP_BY = ("system", "run")
_ALIASES = {"cider": "ciderd", "rouge": "rougel", "bleu": "bleu4"}


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
    #: everything that identifies the system, a line each (``naming.identity``): parts with options,
    #: objective, decoding, hashes, runs; the name shows only what tells it from the other rows
    identity: list[str] = field(default_factory=list)

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


# -- damaged rows ----------------------------------------------------------------------------------------
_DICT_FIELDS = ("encoder_options", "decoder_options", "tokenizer_options", "decoding", "versions", "extra")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def row_problem(r: EvalRecord) -> str | None:
    """What is wrong with a stored row that the board cannot draw (None when it is sound): a NaN or text
    score, a list where a mapping belongs, anything ``EvalRecord.validate`` (the check at record time)
    refuses. Rows get this way by hand edits, other programs or older bugs; one such row must not cost
    the whole board, so :func:`build_leaderboard` skips it and says which and why."""
    for name in ("metrics", "per_image_cider", "captions", *_DICT_FIELDS):
        value = getattr(r, name)
        if not isinstance(value, dict):
            return f"{name} is a {type(value).__name__}, not a mapping ({_short(value)})"
    for name in ("metrics", "per_image_cider"):
        for key, value in getattr(r, name).items():
            if not _is_number(value) or value != value or value in (float("inf"), float("-inf")):
                return f"{name}[{key!r}] is {_short(value)}, not a finite number"
    for name in ("num_images", "params_encoder", "params_decoder"):
        if not isinstance(getattr(r, name), int) or isinstance(getattr(r, name), bool):
            return f"{name} is {_short(getattr(r, name))}, not a whole number"
    for name in ("train_images_per_s", "decode_images_per_s"):
        value = getattr(r, name)
        if value is not None and not _is_number(value):
            return f"{name} is {_short(value)}, not a number"
    if r.seed is not None and not isinstance(r.seed, int):
        return f"seed is {_short(r.seed)}, not a whole number"
    try:
        r.validate()
    except ZooError as exc:
        return str(exc).split(": ", 1)[-1] if str(exc).startswith("evaluation record") else str(exc)
    return None


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _row_name(r: EvalRecord) -> str:
    where = f"row {r.id}" if r.id is not None else "a row without id"
    return f"{where} ({r.system})" if isinstance(r.system, str) else where


def split_damaged(rows: Iterable[EvalRecord]) -> tuple[list[EvalRecord], list[tuple[EvalRecord, str]]]:
    """The sound rows, and the damaged ones with what is wrong with each (:func:`row_problem`)."""
    good, damaged = [], []
    for r in rows:
        problem = row_problem(r)
        if problem is None:
            good.append(r)
        else:
            damaged.append((r, problem))
    return good, damaged


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


def _run_names(rows: Sequence[EvalRecord]) -> list[str]:
    """``--group-by run``: each row by its run name, else its system's short name (``naming.base_names``)
    and seed; a name that repeats gets the row id."""
    bases, _ = naming.base_names([[r] for r in rows])
    names = [r.run_name or (f"{b} seed={r.seed}" if r.seed is not None else b) for r, b in zip(rows, bases)]
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
    return BoardRow(name=name, runs=runs, metrics=metrics, metrics_std=stds, per_image=per_image,
                    identity=naming.identity(runs))


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
    rows, damaged = split_damaged(rows)
    skipped = [f"skipped damaged {_row_name(r)}: {problem}" for r, problem in damaged]
    if not rows:
        raise LeaderboardError(
            "no results to rank: every matching row is damaged:\n  " + "\n  ".join(skipped) + "\nEvaluate those "
            "checkpoints again (`zoo eval` records new rows), or delete the rows with any SQLite tool "
            "(DELETE FROM evaluations WHERE id = N)."
        )
    if group_by not in GROUP_BY:
        raise LeaderboardError(f"--group-by must be one of {', '.join(GROUP_BY)}, got {group_by!r}")
    if resamples < MIN_RESAMPLES:
        raise LeaderboardError(f"--resamples must be at least {MIN_RESAMPLES} for a stable 95% interval, got {resamples}")
    _refuse_mixed(rows)
    metric = resolve_metric(metric, rows)
    notes: list[str] = list(skipped)

    if group_by == "run":
        board = [_summarise(n, [r]) for n, r in zip(_run_names(rows), rows)]
        shared = naming.base_names([[r] for r in rows])[1]
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
        names, shared = naming.system_names(groups)
        board = [_summarise(n, g) for n, g in zip(names, groups)]

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
        shared_parts=shared,
        skipped=[(r.id, r.system if isinstance(r.system, str) else "", problem) for r, problem in damaged],
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
                mean, lo, hi = paired_bootstrap(ours, theirs, resamples=lb.resamples, seed=seed, alpha=1 - lb.confidence)
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


@dataclass
class Leaderboard:
    """A ranked board for one (data set, split, reference set). Its views (``zoo.views.leaderboard``,
    ``zoo.views.leaderboard_page``) draw it; ``to_table``, ``to_markdown``, ``to_csv``, ``to_json``,
    ``plot``, ``plot_png`` and ``to_html`` call them."""

    rows: list[BoardRow]
    metric: str
    data: str
    split: str
    references_hash: str
    resamples: int
    group_by: str = "system"
    notes: list[str] = field(default_factory=list)
    confidence: float = CONFIDENCE  # of the paired-bootstrap intervals to the leader
    #: the parts every row has (``{"encoder": "resnet10t", "tokenizer": "word"}``), left out of the names
    shared_parts: dict[str, str] = field(default_factory=dict)
    #: damaged rows left out (row id, system, what is wrong); the notes say the same in words
    skipped: list[tuple[int | None, str, str]] = field(default_factory=list)

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

    @property
    def leader(self) -> BoardRow | None:
        return self.rows[0] if self.rows and self.rows[0].rank == 1 else None

    # -- views (zoo.views.leaderboard, zoo.views.leaderboard_page) -----------------------------------------
    def to_table(self) -> str:
        """A plain-text table for the terminal."""
        return views.table(self)

    def to_markdown(self) -> str:
        return views.markdown(self)

    def to_csv(self) -> str:
        return views.csv_text(self)

    def to_json(self) -> str:
        return views.json_text(self)

    def plot_png(self, dpi: int = 120) -> bytes:
        return views.plot_png(self, dpi)

    def plot(self, path: str | Path) -> Path:
        """Save the two-panel plot (score vs parameters, score vs decoding speed); format from the suffix."""
        return views.write_plot(self, path)

    def to_html(self, plot_png: bytes | None = None, images: Any = None) -> str:
        """One self-contained page (:mod:`zoo.views.leaderboard_page`): the sortable table, the plot embedded as a
        data URI, and a drill-down from each system to its captions image by image, two systems side by
        side. ``images``: ``ResultsDB.images(self.references_hash)``, for thumbnails and references. No
        external URL, so it works offline and as an attachment."""
        return leaderboard_page.render(self, plot_png, images)
