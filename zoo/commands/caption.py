"""``zoo caption``: captions for image files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from zoo.commands.eval import resolve_checkpoint
from zoo.data.datasets import add_image_arguments, open_image
from zoo.errors import DataError
from zoo.files import missing_reason
from zoo.generation.checks import DecodingOptionError
from zoo.generation.options import DecodingOptions, add_decoding_arguments
from zoo.models.checkpoint import load
from zoo.registry.hookspecs import hookimpl
from zoo.views.attention_figure import write_attention_figures


@hookimpl
def zoo_add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "caption", help="caption image files with a checkpoint",
        description="Caption every image file given. A file that cannot be read is reported (standard error) "
        "and the others are still captioned; the exit status is then 1 (2 when no file could be read).",
    )
    p.add_argument("checkpoint", help="a .safetensors checkpoint or a run folder")
    p.add_argument("images", nargs="+", help="image files")
    add_decoding_arguments(p)
    p.add_argument("--json", action="store_true",
                   help='print [{"file": ..., "caption": ...}] ({"file": ..., "error": ...} for a file that cannot be read)')
    p.add_argument("--attention", metavar="OUT.png", help="also draw each word's attention over the image "
                   "(attention decoders such as gru-attn; OUT-<n>-<image>.png for several images)")
    add_image_arguments(p)
    p.set_defaults(func=cmd_caption)


def _open(path: str) -> Any:
    """The image at ``path``; a file that is missing or not an image is a ZooError saying so, in words
    for this command (``zoo.data.datasets.open_image``'s own advice is about data sets)."""
    p = Path(path)
    problem = missing_reason(p)  # "does not exist", or a symbolic link loop, a broken link
    if problem is not None:
        raise DataError(f"image file {p} {problem}; check the path (zoo caption takes image files)")
    if p.is_dir():
        raise DataError(f"{p} is a folder; zoo caption takes image files (e.g. {p / '*.jpg'})")
    try:
        return open_image(p)
    except DataError as exc:
        cause = exc.__cause__
        if cause is None or isinstance(cause, PermissionError):
            raise  # its message is about the file alone
        raise DataError(
            f"{p} is not an image zoo caption can read ({type(cause).__name__}: {cause}): it is corrupt, "
            f"truncated or not an image file"
        ) from cause


def cmd_caption(args: argparse.Namespace) -> int:
    """Every readable file is captioned; each one that is not is reported, and the exit status is 1 (as
    ``cp`` or ``grep`` do with several files; 2 when none could be read): one bad file in a batch must not
    cost the other captions."""

    decoding = DecodingOptions.from_args(args)  # bad settings fail before any file is read
    ckpt, _ = resolve_checkpoint(args.checkpoint)  # refuses a run's state.safetensors, naming its checkpoints
    if args.attention and (decoding.sample or decoding != DecodingOptions(decoding.beam_size, decoding.max_len)):
        raise DecodingOptionError("--attention draws beam-search captions with --beam and --max-len only; "
                                  "leave out --sample, the constraints and --length-penalty")
    opened: dict[int, Any] = {}
    errors: dict[int, str] = {}
    for i, path in enumerate(args.images):  # every file checked before the model is loaded
        try:
            opened[i] = _open(path)
        except DataError as exc:
            errors[i] = str(exc)
            print(f"zoo caption: error: {exc}", file=sys.stderr)
    captions: dict[int, Any] = {}
    if opened:
        model = load(ckpt)
        keys = sorted(opened)
        images, names = [opened[i] for i in keys], [args.images[i] for i in keys]
        if args.attention:
            drawn = write_attention_figures(model, images, names, args.attention, beam_size=decoding.beam_size,
                                            max_len=decoding.max_len)
            captions = {i: c for i, (c, _) in zip(keys, drawn)}
            print("\n".join(f"attention: {f} -> {path}" for f, (_, path) in zip(names, drawn)), file=sys.stderr)
        else:
            generator = torch.Generator().manual_seed(decoding.seed) if decoding.sample else None
            captions = dict(zip(keys, model.caption_images(images, generator=generator, **decoding.generate_kwargs())))
    if args.json:
        print(json.dumps([{"file": f, "caption": captions[i]} if i in captions else {"file": f, "error": errors[i]}
                          for i, f in enumerate(args.images)], indent=1))
    else:
        for i, f in enumerate(args.images):
            if i in captions:  # -n N: one line per sample, most probable first
                for one in captions[i] if isinstance(captions[i], list) else [captions[i]]:
                    print(f"{f}\t{one}")
    if errors:
        print(f"zoo caption: {len(errors)} of {len(args.images)} file(s) could not be read and were not captioned",
              file=sys.stderr)
        return 1 if captions else 2  # 2, as for any error, when nothing could be captioned
    return 0
