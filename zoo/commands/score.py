"""``zoo score GT.json RESULTS.json``: the official COCO caption metrics for a results file.

Prints every metric x100 (as papers do) next to pycocoevalcap's 0-1 value, says which metrics were not
computed and why (SPICE offline), and writes the 0-1 scores, notes and per-image CIDEr-D as JSON with
``--json``."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from zoo.evaluation.cider import SmallCorpusWarning
from zoo.evaluation.coco import DEFAULT_METRICS, format_scores, score_files
from zoo.files import atomic_write
from zoo.registry.hookspecs import hookimpl


@hookimpl
def zoo_add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "score",
        help="score a COCO results file against COCO ground truth (BLEU, METEOR, ROUGE-L, CIDEr-D, SPICE)",
        description=(
            "Score a COCO results file ([{'image_id', 'caption'}]) against a COCO caption file with the "
            "official protocol (PTB tokenizer, pycocoevalcap). Scores print x100 and on the 0-1 scale."
        ),
    )
    p.add_argument("gt", type=Path,
                   help="ground truth: COCO caption JSON with 'images' and 'annotations' (gzip-compressed or not)")
    p.add_argument("results", type=Path,
                   help='results: JSON list of {"image_id": ..., "caption": ...} (gzip-compressed or not)')
    p.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRICS),
        metavar="NAME",
        help=f"metric names (space or comma separated; default: {' '.join(DEFAULT_METRICS)}); see `zoo list metrics`",
    )
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write scores (0-1 scale) as JSON here")
    p.add_argument(
        "--reference-cider",
        action="store_true",
        help="CIDEr-D by pycocoevalcap's own (slow) implementation instead of cider-d-fast (same numbers)",
    )
    p.add_argument(
        "--no-ptb",
        action="store_true",
        help="skip the PTB tokenizer (no Java needed; captions must already be tokenised). Not the official protocol",
    )
    p.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    metrics = [m.strip() for item in args.metrics for m in item.split(",") if m.strip()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallCorpusWarning)  # printed once, as a note under the scores
        result = score_files(
            args.gt, args.results, metrics=metrics, tokenize=not args.no_ptb, reference_cider=args.reference_cider
        )
    print(format_scores(result))
    if args.json is not None:
        payload = {"gt": str(args.gt), "results": str(args.results), **result.to_dict()}
        text = json.dumps(payload, indent=1)
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        print(f"wrote {args.json}")
    return 0
