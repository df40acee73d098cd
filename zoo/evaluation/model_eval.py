"""Evaluate a model on a data set split: decode every image, score with the official protocol, write the
COCO-format results file and a metrics JSON, and record a row in the results database.

Decoding streams batches through DataLoader workers, so memory stays flat however many images there are.
Under ``torchrun`` each rank decodes its share of the images; the captions are gathered and scored once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zoo.errors import ZooError
from zoo.evaluation.caption_stats import caption_statistics
from zoo.evaluation.captioning import generate_for_items, simple_tokenize
from zoo.evaluation.coco import SCALE_NOTE, check_metrics, evaluate_captions
from zoo.evaluation.report import DEFAULT_REPORT_IMAGES, report_evaluation
from zoo.files import atomic_write
from zoo.generation.checks import check_decoding_options
from zoo.generation.options import DecodingOptions
from zoo.models.caption_model import CaptionModel
from zoo.runtime import distributed as dist
from zoo.runtime.device import resolve_device

DEFAULT_METRICS = ("bleu", "meteor", "rouge-l", "cider-d", "spice")


@dataclass
class ModelEvaluation:
    metrics: dict[str, float]  # 0-1 scale
    per_image_cider: dict[str, float]
    not_computed: dict[str, str]
    captions: dict[Any, str]  # image id → caption
    references: dict[Any, list[str]]  # image id → the raw reference captions scored against
    decoding: dict[str, Any]
    data: str
    split: str
    num_images: int
    decode_images_per_s: float
    notes: list[str] = field(default_factory=list)
    scoring: Any = None  # the zoo.evaluation.coco.EvalResult (for format_scores)
    max_images: int | None = None  # the evaluation was limited to the first max_images images
    tokenized: bool = True  # PTB-tokenised (the official protocol); False: --no-ptb
    results_path: Path | None = None
    references_path: Path | None = None
    metrics_path: Path | None = None
    report_path: Path | None = None  # report_*.html (zoo.evaluation.report)
    thumbnails: dict[str, bytes] = field(default_factory=dict, repr=False)  # image id → JPEG, from the report
    record_id: int | None = None
    caption_stats: dict[str, Any] = field(default_factory=dict)  # zoo.evaluation.caption_stats: not metrics
    samples: dict[Any, list[str]] = field(default_factory=dict, repr=False)  # with n > 1: every sample
    #: what could not be kept, and why ("report_x.html" → "No space left on device ..."): a file that failed
    #: to write, or part of the database row (``zoo.results.record``); the scores are kept all the same
    not_written: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "split": self.split,
            "num_images": self.num_images,
            "decoding": self.decoding,
            "metrics": self.metrics,
            "max_images": self.max_images,
            "ptb_tokenized": self.tokenized,
            "scale": SCALE_NOTE,
            "not_computed": self.not_computed,
            "decode_images_per_s": self.decode_images_per_s,
            "notes": self.notes,
            "caption_stats": self.caption_stats,
        }


def check_request(
    metrics: tuple[str, ...] | list[str], beam_size: int, max_len: int, length_penalty: float, tokenize: bool = True,
    decoding: Any = None,
) -> None:
    """What :func:`evaluate_model` checks before decoding anything: the decoding settings, and that the
    metrics can be scored here (names registered, Java for the PTB tokenizer, at least one metric
    available) with the same checks :func:`zoo.evaluation.coco.evaluate_captions` makes, so a bad request fails
    in seconds rather than after decoding the whole split."""
    check_decoding_options(beam_size, max_len, length_penalty)
    if decoding is not None:  # a zoo.generation.options.DecodingOptions: sampling and constraints too
        decoding.check()
    check_metrics(metrics, tokenize=tokenize)


def _check_counts(batch_size: int, num_workers: int, max_images: int | None) -> None:
    def bad(value: Any, low: int) -> bool:
        return isinstance(value, bool) or not isinstance(value, int) or value < low

    if bad(batch_size, 1):
        raise ZooError(f"batch_size (--batch-size) must be an integer ≥ 1, got {batch_size!r}")
    if bad(num_workers, 0):
        raise ZooError(f"num_workers (--workers) must be an integer ≥ 0, got {num_workers!r}")
    if max_images is not None and bad(max_images, 1):
        raise ZooError(f"max_images (--max-images) must be an integer ≥ 1 or None (every image), got {max_images!r}")


def evaluate_model(
    model: CaptionModel,
    dataset: Any,
    *,
    beam_size: int = 3,
    max_len: int = 20,
    length_penalty: float = 1.0,
    batch_size: int = 64,
    num_workers: int = 0,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    out_dir: str | Path | None = None,
    skip_bad_images: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
    max_images: int | None = None,
    tokenize: bool = True,
    report_images: int | None = None,
    decoding: Any = None,
    train_captions: Any = None,
) -> ModelEvaluation | None:
    """Decode and score ``dataset``; returns None on ranks other than 0 under ``torchrun``.

    The metrics, decoding settings and counts are checked first (:func:`check_request`). With ``out_dir``
    the captions (``results_*.json``) and their references in COCO format (``references_*.json``) are
    written as soon as decoding ends, before scoring, so if scoring fails they can still be scored with
    ``zoo score references_*.json results_*.json``.

    ``tokenize=False`` (``zoo eval --no-ptb``) scores without the PTB tokenizer, so without Java: captions
    and references are lower-cased and stripped of punctuation in Python (as training validation does).
    Not the official protocol; the files are tagged ``_noptb``.

    With ``out_dir`` the evaluation report ``report_*.html`` is written last (:mod:`zoo.evaluation.report`), with
    thumbnails of at most ``report_images`` images (None: ``zoo.evaluation.report.DEFAULT_REPORT_IMAGES``).

    ``decoding`` (a ``zoo.generation.options.DecodingOptions``) gives every decoding setting at once (sampling,
    constraints) in place of ``beam_size``/``max_len``/``length_penalty``; with ``n > 1`` the most probable
    sample of each image is scored and all of them go to ``samples_*.json``. ``train_captions`` (an
    iterable of strings) lets ``caption_stats`` count copies of training captions."""
    _check_counts(batch_size, num_workers, max_images)

    options = decoding if decoding is not None else DecodingOptions(beam_size, max_len, length_penalty)
    check_request(metrics, options.beam_size, options.max_len, options.length_penalty, tokenize=tokenize,
                  decoding=options)
    dev = torch.device(device) if device is not None else resolve_device("auto")
    model.to(dev).eval()
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    mine = dist.shard(list(range(n)))
    t0 = time.perf_counter()
    caps = generate_for_items(
        model, dataset, mine, options.beam_size, options.max_len, dev, batch_size=batch_size,
        num_workers=num_workers, length_penalty=options.length_penalty, skip_bad_images=skip_bad_images,
        progress=progress and dist.rank() == 0, decoding=_generate_extras(options, dev),
    )
    elapsed = time.perf_counter() - t0
    gathered = dist.all_gather_object(caps)
    if dist.rank() != 0:
        return None
    by_index: dict[int, str] = {}
    for part in gathered:
        by_index.update(part)
    speed = n / elapsed if elapsed > 0 else 0.0
    own_notes = []
    skipped = n - len(by_index)
    if skipped:
        own_notes.append(f"{skipped} bad images skipped (--skip-bad-images)")
    samples = {dataset[i].image_id: c for i, c in sorted(by_index.items()) if isinstance(c, list)}
    res = {dataset[i].image_id: (c[0] if isinstance(c, list) else c) for i, c in sorted(by_index.items())}
    gts = {dataset[i].image_id: list(dataset[i].captions) for i in sorted(by_index)}
    decoding = options.recorded()
    tag = output_tag(dataset.name, dataset.split, decoding, max_images, tokenize=tokenize)
    paths: dict[str, Path] = {}
    failed: dict[str, str] = {}  # file → why it could not be written (a full disk): the scores go on
    if out_dir is not None:  # before scoring, which can fail (a Java crash, SPICE's jar)
        try:
            paths = write_captions(res, gts, Path(out_dir), tag)
        except OSError as exc:
            failed[f"{Path(out_dir) / f'results_{tag}.json'} and references_{tag}.json"] = _why(exc)
        if samples:
            _keep_going(failed, Path(out_dir) / f"samples_{tag}.json", lambda path: atomic_write(path, lambda tmp: Path(
                tmp).write_text(json.dumps([{"image_id": k, "captions": v} for k, v in samples.items()]))))
    subset_of = len(dataset) if len(res) < len(dataset) else None
    try:
        if tokenize:
            result = evaluate_captions(gts, res, metrics=metrics, subset_of=subset_of)
        else:
            result = evaluate_captions(
                {k: [simple_tokenize(c) for c in caps] for k, caps in gts.items()},
                {k: simple_tokenize(c) for k, c in res.items()},
                metrics=metrics, tokenize=False, subset_of=subset_of,
            )
    except ZooError as exc:
        hinted = _with_saved_hint(exc, paths) if paths else None
        if hinted is None:
            raise
        raise hinted from exc
    notes = list(result.notes) + own_notes  # the scorer's notes first, then ours
    ev = ModelEvaluation(
        metrics=dict(result.scores),
        per_image_cider={str(k): float(v) for k, v in result.per_image_cider.items()},
        not_computed=dict(result.not_computed),
        captions=res,
        references=gts,
        decoding=decoding,
        data=dataset.name,
        split=dataset.split,
        num_images=len(res),
        decode_images_per_s=speed,
        notes=notes,
        scoring=result,
        max_images=max_images,
        tokenized=tokenize,
        caption_stats=caption_statistics(res.values(), train_captions),
        samples=samples,
        not_written=failed,
    )
    if out_dir is not None:  # a file that cannot be written (a full disk) is noted, and the rest goes on
        ev.results_path, ev.references_path = paths.get("results"), paths.get("references")
        _keep_going(failed, Path(out_dir) / f"metrics_{tag}.json", lambda path: _write_metrics(ev, path))

        items = {str(dataset[i].image_id): dataset[i] for i in sorted(by_index)}
        limit = DEFAULT_REPORT_IMAGES if report_images is None else report_images
        _keep_going(failed, Path(out_dir) / f"report_{tag}.html",
                    lambda path: report_evaluation(ev, model, items, path, limit))
    return ev


def _why(exc: OSError) -> str:
    return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")


def _keep_going(failed: dict[str, str], path: Path, write: Any) -> None:
    """``write(path)``; an OSError (a full disk, a folder that cannot be written) is noted in ``failed``
    instead of raised: once the captions are scored, a file that cannot be written must not cost the scores
    or the database row (the caller says what was kept and what was not)."""
    try:
        write(path)
    except OSError as exc:
        failed[str(path)] = _why(exc)


def _with_saved_hint(exc: Exception, paths: dict[str, Path]) -> Exception | None:
    """``exc`` again (same type), its message saying where the decoded captions were saved and how to
    score them once the problem is fixed; None for an error type that cannot be rebuilt from a message."""
    hint = (
        f"{exc}\nThe decoded captions were saved to {paths['results']}; once this is fixed, score them "
        f"without decoding again: zoo score {paths['references']} {paths['results']}"
    )
    try:
        return type(exc)(hint)
    except Exception:  # a subclass with another constructor: keep it as it is
        return None


def _generate_extras(options: Any, device: torch.device) -> dict[str, Any]:
    """The ``generate`` keywords beyond beam size, length and penalty: sampling (with a generator
    seeded from ``options.seed`` on the decoding device) and constraints."""
    extras = {k: v for k, v in options.generate_kwargs().items()
              if k not in ("beam_size", "max_len", "length_penalty")}
    if options.sample:
        extras["generator"] = torch.Generator(device=device).manual_seed(options.seed)
    return extras


def output_tag(
    data: str, split: str, decoding: dict[str, Any], max_images: int | None = None, tokenize: bool = True
) -> str:
    """The name shared by an evaluation's files: ``{data}_{split}_beam{K}`` (or ``_sample``), plus every
    decoding setting that differs from the default (``zoo.generation.options.DecodingOptions.tag``: ``_len{N}``,
    ``_lp{P}``, ``_t{T}``, ``_n{N}``, ``_norep3``, ``_nobad`` ...), ``_first{M}`` for ``max_images``,
    ``_noptb`` when scored without the PTB tokenizer, so runs with other settings never overwrite each
    other's files."""
    tag = f"{data}_{split}_{DecodingOptions.from_recorded(decoding).tag()}"
    if max_images is not None:
        tag += f"_first{max_images}"
    if not tokenize:
        tag += "_noptb"
    return tag


def write_captions(res: dict[Any, str], gts: dict[Any, list[str]], out: Path, tag: str) -> dict[str, Path]:
    """``results_{tag}.json`` (COCO results format) and ``references_{tag}.json`` (COCO caption format),
    the two files ``zoo score`` takes; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    results = [{"image_id": k, "caption": v} for k, v in res.items()]
    references = {
        "images": [{"id": k} for k in gts],
        "annotations": [{"image_id": k, "id": i, "caption": c} for i, (k, c) in
                        enumerate((k, c) for k, caps in gts.items() for c in caps)],
    }
    paths = {"results": out / f"results_{tag}.json", "references": out / f"references_{tag}.json"}
    atomic_write(paths["results"], lambda tmp: Path(tmp).write_text(json.dumps(results)))
    atomic_write(paths["references"], lambda tmp: Path(tmp).write_text(json.dumps(references)))
    return paths


def _write_metrics(ev: ModelEvaluation, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(ev.summary(), indent=1)))
    ev.metrics_path = path
