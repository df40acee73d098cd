"""``zoo eval``: decode a split with a checkpoint, score it with the official protocol, record the row."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

from zoo.data.datasets import add_image_arguments, load_dataset
from zoo.errors import CheckpointError, ResultsDBError, ZooError
from zoo.evaluation.caption_stats import format_statistics, read_caption_file
from zoo.evaluation.cider import SmallCorpusWarning
from zoo.evaluation.coco import format_scores
from zoo.evaluation.model_eval import evaluate_model
from zoo.evaluation.report import DEFAULT_REPORT_IMAGES
from zoo.files import missing_reason
from zoo.generation.options import DecodingOptions, add_decoding_arguments
from zoo.models.checkpoint import load, objective_signature, read_extra, read_metadata, recorded_train_speed
from zoo.registry.hookspecs import hookimpl
from zoo.results.database import add_db_argument, check_writable, resolve_db_path
from zoo.results.record import record
from zoo.runtime import distributed as dist
from zoo.training.runs import RunSpec, read_train_speed


def _int_at_least(low: int, what: str):
    """An argparse ``type``: an integer ``>= low``, refused at once (naming the flag) otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


#: argparse types for counts given on the command line (shared by the sub-commands)
positive_int = _int_at_least(1, "an integer ≥ 1")
non_negative_int = _int_at_least(0, "an integer ≥ 0")


@hookimpl
def zoo_add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint on a data set split (BLEU, METEOR, ROUGE-L, CIDEr-D, SPICE)",
        description="Decode every image of a split, score with pycocoevalcap's protocol (PTB tokenizer), "
        "write results_*.json (COCO format) and metrics_*.json, and add a row to the results database. "
        "The metrics are checked before decoding; the captions (results_*.json) and references "
        "(references_*.json) are written before scoring, so `zoo score` can score them if scoring fails. "
        "A file that cannot be written once the scores are in (a full disk) does not cost the database row: "
        "the command says what was recorded and written and what was not, and exits with status 1.",
    )
    p.add_argument("checkpoint", help="a .safetensors checkpoint, or a run folder (uses best.safetensors)")
    p.add_argument("--data", default=None, help="data set name (default: the one the checkpoint was trained on, from its run folder or its own metadata)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.KEY=VALUE",
                   help="data set options, e.g. data.annotations=PATH")
    p.add_argument("--split", default="test")
    add_decoding_arguments(p)
    p.add_argument("--train-captions", default=None, metavar="FILE",
                   help="training captions (COCO or Karpathy JSON, or one per line) for the share of generated "
                   "captions that copy one (default: the data set's train split, when it loads)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images decoded per batch (≥ 1)")
    p.add_argument("--workers", type=non_negative_int, default=0,
                   help="DataLoader workers decoding images (0: in the main process)")
    p.add_argument("--max-images", type=positive_int, default=None,
                   help="evaluate only the first N images of the split (a quick check, not a reportable score)")
    p.add_argument("--metrics", default="bleu,meteor,rouge-l,cider-d,spice")
    p.add_argument(
        "--no-ptb",
        action="store_true",
        help="score without the PTB tokenizer, so without Java: references and captions are lower-cased and "
        "stripped of punctuation in Python instead (METEOR and SPICE, Java programs, are not computed). NOT the "
        "official protocol: the scores are not comparable with published ones and are not recorded",
    )
    p.add_argument("--out", default=None, help="folder for results/metrics files (default: next to the checkpoint)")
    p.add_argument("--report-images", type=non_negative_int, default=None, metavar="N",
                   help="thumbnails in report_*.html for at most N images, the N/2 lowest and N/2 highest CIDEr-D "
                   f"(default {DEFAULT_REPORT_IMAGES}; 0: none); every image is listed either way")
    p.add_argument("--skip-bad-images", action="store_true", help="count and skip images that cannot be decoded")
    add_db_argument(p)
    add_image_arguments(p)
    p.add_argument("--no-record", action="store_true", help="do not add this evaluation to the results database")
    p.add_argument("--seed", type=int, default=None, help="the training seed, recorded with the row")
    p.add_argument("--json", action="store_true", help="print the metrics JSON instead of the table")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)


def resolve_checkpoint(path: str) -> tuple[Path, Path | None]:
    """(checkpoint file, run folder or None). The file's header is checked at once (before any data set
    loads): a run's resumable training state (``state.safetensors``) is refused, pointing to the run's
    model checkpoints."""
    p = Path(path)
    problem = missing_reason(p)
    if problem is not None and problem != "does not exist":  # a symbolic link loop is not a missing file
        raise CheckpointError(f"checkpoint {p} {problem}")
    if p.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (p / name).exists():
                return p / name, p
        raise ZooError(f"{p} is a folder without best.safetensors or last.safetensors; is it a run folder?")
    read_metadata(p)  # a missing, damaged or foreign file, or a run's training state, is refused here
    return p, (p.parent if (p.parent / "run.json").exists() else None)


def cmd_eval(args: argparse.Namespace) -> int:

    decoding = DecodingOptions.from_args(args)  # bad settings fail here, naming the flag
    dist.init_from_env()
    try:
        ckpt, run_dir = resolve_checkpoint(args.checkpoint)
        if not args.no_record and not args.no_ptb:  # every rank: none may start decoding alone

            # before decoding: a database that cannot take the row fails in seconds, not after the work
            check_writable(args.db, otherwise="or pass --no-record to evaluate without recording")
        model = load(ckpt)
        # the run it trained in: its folder's run.json, else what the checkpoint itself records
        spec = RunSpec.from_file(run_dir / "run.json") if run_dir else RunSpec.from_checkpoint(ckpt)
        # everything the row takes from the checkpoint, read and checked now: a bad entry costs no decoding
        extra = read_extra(ckpt)
        objective = objective_signature(extra, ckpt)
        train_speed = recorded_train_speed(extra, ckpt) or read_train_speed(run_dir)
        seed = args.seed if args.seed is not None else (spec.train.get("seed", 0) if spec else None)
        data = args.data or (spec.data if spec else None)
        if data is None:
            raise ZooError(
                f"{ckpt} does not record the data set it was trained on (it was not written by `zoo train`, "
                f"and no run.json is beside it): say which data set to evaluate on with --data NAME (and "
                f"--data-root)"
            )
        root = args.data_root or (spec.data_root if spec and data == spec.data else None)
        options = dict(spec.data_options) if spec and data == spec.data else {}
        if args.overrides:
            options = RunSpec("x", "x", "x", data, data_options=options).with_overrides(args.overrides).data_options
        dataset = load_dataset(data, root=root, split=args.split, **options)
        train_captions = _train_captions(args.train_captions, data, root, options, args.split)
        metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
        out = Path(args.out) if args.out else ckpt.parent / "eval"
        with warnings.catch_warnings():
            # the small-corpus caveat is printed once, as a note under the scores, not also as a Python warning
            warnings.simplefilter("ignore", SmallCorpusWarning)
            ev = evaluate_model(
                model, dataset, decoding=decoding, train_captions=train_captions,
                batch_size=args.batch_size, num_workers=args.workers, metrics=metrics, out_dir=out,
                skip_bad_images=args.skip_bad_images, progress=not args.no_progress, max_images=args.max_images,
                tokenize=not args.no_ptb, report_images=args.report_images,
            )
        if ev is None:
            return 0
        if args.no_ptb and not args.no_record:
            ev.notes.append(
                "not recorded in the results database: scored without the PTB tokenizer (--no-ptb), which is not "
                "the official protocol, so the row would not be comparable with the others"
            )
        elif not args.no_record:
            try:
                record(ev, model, args.db, checkpoint=ckpt, seed=seed,
                       run_name=str(run_dir) if run_dir else None,
                       train_images_per_s=train_speed, objective=objective)
            except ResultsDBError as exc:  # the row is not recorded: say what the evaluation kept
                raise ResultsDBError(f"{exc}\nThe evaluation was scored but NOT recorded. {_files_kept(ev)}") from exc
        if args.json:
            print(json.dumps(ev.summary(), indent=1))
        else:
            print(f"{ckpt} on {ev.data}/{ev.split}: {ev.num_images} images, {decoding.describe()}")
            print(format_scores(ev.scoring))
            print(format_statistics(ev.caption_stats))
            for note in ev.notes[len(ev.scoring.notes):]:
                print(f"note: {note}")
            for what, path in (("results", ev.results_path), ("references", ev.references_path),
                               ("metrics", ev.metrics_path), ("report", ev.report_path)):
                print(f"{what}: {path or 'NOT written (see below)'}")
        if ev.not_written:
            raise PartlyKept(_partly_kept(ev, args.db))
    finally:
        dist.cleanup()
    return 0


class PartlyKept(ZooError):
    """The evaluation was scored (and recorded, unless said otherwise) but something could not be written;
    exit status 1, apart from 2 (nothing done), so a script can tell "scores kept, files missing"."""

    exit_code = 1


def _files_kept(ev: Any) -> str:
    kept = [str(p) for p in (ev.results_path, ev.references_path, ev.metrics_path, ev.report_path) if p]
    return f"Written: {', '.join(kept)}." if kept else "No file was written."


def _partly_kept(ev: Any, db: str | None) -> str:
    """What an evaluation kept and what it did not, once something could not be written."""
    scores = ", ".join(f"{k} {v:.4f}" for k, v in ev.metrics.items())
    if ev.record_id is not None:
        recorded = (f"Recorded: row {ev.record_id} in results database {resolve_db_path(db)} (scores, per-image "
                    f"CIDEr-D, captions): the leaderboard has it.")
    else:
        recorded = "Not recorded in the results database (--no-record, or --no-ptb)."
    missing = "; ".join(f"{what}: {why}" for what, why in ev.not_written.items())
    again = " Pass --no-record to keep from recording a second row." if ev.record_id is not None else ""
    return (
        f"the evaluation was scored ({scores}), but not everything could be written. {recorded} "
        f"{_files_kept(ev)} NOT written: {missing}. Free some space (or pass --out with another folder) and run "
        f"`zoo eval` again for the missing files.{again}"
    )



def _train_captions(path: str | None, data: str, root, options: dict, split: str) -> list[str] | None:
    """Training captions for the copy statistic: ``--train-captions FILE``, else the data set's train
    split (None when it does not load, or when the split evaluated is itself the train split's)."""
    if path:
        return read_caption_file(path)
    try:
        train = load_dataset(data, root=root, split="train", **options)
        return [c for i in range(len(train)) for c in train[i].captions]
    except (ZooError, OSError, ValueError, KeyError):
        return None
