"""``zoo caption``: captions for image files."""

from __future__ import annotations

import argparse
import json

from zoo.hookspecs import hookimpl


@hookimpl
def zoo_add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("caption", help="caption image files with a checkpoint")
    p.add_argument("checkpoint", help="a .safetensors checkpoint or a run folder")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--beam", type=int, default=3)
    p.add_argument("--max-len", type=int, default=20)
    p.add_argument("--json", action="store_true", help='print [{"file": ..., "caption": ...}]')
    p.set_defaults(func=cmd_caption)


def cmd_caption(args: argparse.Namespace) -> int:
    from zoo.checkpoint import load
    from zoo.commands.eval import resolve_checkpoint
    from zoo.data import open_image

    ckpt, _ = resolve_checkpoint(args.checkpoint)
    model = load(ckpt)
    images = [open_image(p) for p in args.images]  # names the file that cannot be read
    captions = model.caption_images(images, beam_size=args.beam, max_len=args.max_len)
    if args.json:
        print(json.dumps([{"file": f, "caption": c} for f, c in zip(args.images, captions)], indent=1))
    else:
        for f, c in zip(args.images, captions):
            print(f"{f}\t{c}")
    return 0
