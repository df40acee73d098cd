"""``zoo caption``: captions for image files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from zoo.decoding import add_decoding_arguments
from zoo.hookspecs import hookimpl


@hookimpl
def zoo_add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("caption", help="caption image files with a checkpoint")
    p.add_argument("checkpoint", help="a .safetensors checkpoint or a run folder")
    p.add_argument("images", nargs="+", help="image files")
    add_decoding_arguments(p)
    p.add_argument("--json", action="store_true", help='print [{"file": ..., "caption": ...}]')
    p.add_argument("--attention", metavar="OUT.png", help="also draw each word's attention over the image "
                   "(attention decoders such as gru-attn; OUT-<n>-<image>.png for several images)")
    p.set_defaults(func=cmd_caption)


def _open(path: str) -> Any:
    """The image at ``path``; a file that is missing or not an image is a ZooError saying so, in words
    for this command (``zoo.data.open_image``'s own advice is about data sets)."""
    from zoo.data import open_image
    from zoo.errors import DataError

    p = Path(path)
    if not p.exists():
        raise DataError(f"image file {p} does not exist; check the path (zoo caption takes image files)")
    if p.is_dir():
        raise DataError(f"{p} is a folder; zoo caption takes image files (e.g. {p / '*.jpg'})")
    try:
        return open_image(p)
    except DataError as exc:
        cause = exc.__cause__
        if cause is None or isinstance(cause, PermissionError) or "decompression-bomb" in str(exc):
            raise  # its message is about the file alone
        raise DataError(
            f"{p} is not an image zoo caption can read ({type(cause).__name__}: {cause}): it is corrupt, "
            f"truncated or not an image file"
        ) from cause


def cmd_caption(args: argparse.Namespace) -> int:
    from zoo.checkpoint import load
    from zoo.commands.eval import resolve_checkpoint

    from zoo.decoding import DecodingOptions

    decoding = DecodingOptions.from_args(args)  # bad settings fail before any file is read
    ckpt, _ = resolve_checkpoint(args.checkpoint)  # refuses a run's state.safetensors, naming its checkpoints
    images = [_open(p) for p in args.images]  # every file checked before the model is loaded
    model = load(ckpt)
    if args.attention and (decoding.sample or decoding != DecodingOptions(decoding.beam_size, decoding.max_len)):
        from zoo.generation import DecodingOptionError

        raise DecodingOptionError("--attention draws beam-search captions with --beam and --max-len only; "
                                  "leave out --sample, the constraints and --length-penalty")
    if args.attention:
        from zoo.attention_figure import write_attention_figures

        drawn = write_attention_figures(model, images, args.images, args.attention, beam_size=decoding.beam_size, max_len=decoding.max_len)
        captions = [c for c, _ in drawn]
        print("\n".join(f"attention: {f} -> {path}" for f, (_, path) in zip(args.images, drawn)), file=sys.stderr)
    else:
        import torch

        generator = torch.Generator().manual_seed(decoding.seed) if decoding.sample else None
        captions = model.caption_images(images, generator=generator, **decoding.generate_kwargs())
    if args.json:
        print(json.dumps([{"file": f, "caption": c} for f, c in zip(args.images, captions)], indent=1))
    else:
        for f, c in zip(args.images, captions):
            for one in c if isinstance(c, list) else [c]:  # -n N: one line per sample, most probable first
                print(f"{f}\t{one}")
    return 0
