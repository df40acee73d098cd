"""``zoo train``: train a recipe, or any encoder + decoder + tokenizer, on a data set."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zoo.data.datasets import add_image_arguments
from zoo.errors import ZooError
from zoo.registry.hookspecs import hookimpl
from zoo.runtime import distributed as dist
from zoo.training.runs import RunSpec, execute, init_from_checkpoint


@hookimpl
def zoo_add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a recipe or encoder+decoder+tokenizer",
        description="Train a captioner. Either a recipe (`zoo list models`) or --encoder/--decoder/--tokenizer. "
        "Writes run.json, log.jsonl, state.safetensors (resumable), best.safetensors and last.safetensors "
        "into --out. Works under torchrun (DistributedDataParallel).",
    )
    p.add_argument("recipe", nargs="?", help="a recipe name from registry.yaml")
    p.add_argument("--encoder", help="a timm backbone name (or another registered encoder)")
    p.add_argument("--decoder", help="gru, gru-stacked, gru-attn, lstm, or a plugin's")
    p.add_argument("--tokenizer", help="word or sentencepiece (or a plugin's)")
    p.add_argument("--data", help="data set name (shapes, coco, coco-karpathy, folder, ...)")
    p.add_argument("--data-root", help="folder of the data set (COCO root, image folder)")
    p.add_argument("--train-split", default=None, help="split to train on (default train)")
    p.add_argument("--val-split", default=None, help="split to validate on each epoch (default val; 'none' to skip)")
    p.add_argument("--pretrained", nargs="?", const=True, default=None,
                   help="ImageNet weights for the encoder (from a weight source), or a weights file; "
                   "overrides the recipe's `pretrained:`")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_const", const=False,
                   help="a randomly initialised encoder, even if the recipe says `pretrained: true`")
    p.add_argument("--freeze", action="store_true", help="freeze the encoder (features are cached on disk)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override an option: decoder.hidden_size=1024, train.epochs=30, data.max_images=500")
    p.add_argument("--objective", help="training objective: xe (cross-entropy, the default), scst, or a plugin's "
                   "(`zoo list objectives`); its options: --set objective.KEY=VALUE. Same as --set train.objective=NAME")
    p.add_argument("--init", metavar="CKPT", help="start from this checkpoint's weights (e.g. runs/xe/best.safetensors, "
                   "or its run folder): a new run, its architecture, tokenizer and (unless given) data and "
                   "training settings taken from the checkpoint; path and sha256 are recorded in run.json")
    p.add_argument("--out", help="run folder (default runs/<recipe or parts>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run that stopped, from its last state")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out images that cannot be decoded (checked before training; counted and named in "
                   "run.json) instead of stopping at the first; the same as --set train.skip_bad_images=true")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_image_arguments(p)
    p.set_defaults(func=cmd_train)


def spec_from_args(args: argparse.Namespace):
    if args.init:
        given = [f"--{p}" for p in ("encoder", "decoder", "tokenizer") if getattr(args, p)]
        if args.recipe or given:
            raise ZooError(
                f"--init {args.init}: the architecture and tokenizer come from the checkpoint; leave out "
                f"{', '.join(given) or 'the recipe name'} (give --data/--data-root and --set to change the data or settings)"
            )
        spec = init_from_checkpoint(None, args.init)
        if args.data:
            spec.data = args.data
    elif args.recipe:
        spec = RunSpec.from_recipe(args.recipe)
        for part in ("encoder", "decoder", "tokenizer", "data"):
            if getattr(args, part):
                setattr(spec, part, getattr(args, part))
    else:
        missing = [f"--{p}" for p in ("encoder", "decoder", "tokenizer") if not getattr(args, p)]
        if missing:
            raise ZooError(f"give a recipe name, or {', '.join(missing)} (see `zoo list models`)")
        spec = RunSpec(encoder=args.encoder, decoder=args.decoder, tokenizer=args.tokenizer, data=args.data or "shapes")
    if args.data_root:
        spec.data_root = str(Path(args.data_root).resolve())
    if args.train_split:
        spec.train_split = args.train_split
    if args.val_split:
        spec.val_split = None if args.val_split.lower() == "none" else args.val_split
    if args.pretrained is not None:
        spec.pretrained = args.pretrained
    if args.freeze:
        spec.encoder_kwargs["freeze"] = True
    if args.objective:
        spec.train["objective"] = args.objective
    return _with_flags(spec.with_overrides(args.overrides), args)


def _with_flags(spec, args: argparse.Namespace):
    """The training settings that have a flag of their own (given on a resume too)."""
    if getattr(args, "skip_bad_images", False):
        spec.train["skip_bad_images"] = True
    return spec


def cmd_train(args: argparse.Namespace) -> int:
    dist.init_from_env()
    try:
        if args.resume:
            out = Path(args.resume)
            if args.init:
                raise ZooError(f"--resume {out} continues from its own saved state; leave out --init {args.init}")
            spec = _with_flags(RunSpec.from_file(out / "run.json").with_overrides(args.overrides), args)
            result = execute(spec, out, resume=True, progress=not args.no_progress)
        else:
            spec = spec_from_args(args)
            default = spec.recipe or spec.system.replace("+", "-")
            if spec.train.get("objective", "xe") != "xe":
                default += f"-{spec.train['objective']}"
            out = Path(args.out or Path("runs") / default)
            result = execute(spec, out, progress=not args.no_progress)
        if dist.rank() == 0:
            if result.note:
                print(result.note, file=sys.stderr)
            print(json.dumps({
                "out": str(result.out_dir),
                "steps": result.steps,
                "final_loss": result.final_loss,
                "best_val_cider_d": result.best_val_cider,
                "train_images_per_s": result.train_images_per_s,
            }))
    finally:
        dist.cleanup()
    return 0
