"""``make demo``: the four built-in decoders compared on the embedded ``shapes`` data set, on a CPU.

Trains gru, gru-stacked, gru-attn and lstm on the same frozen encoder (features cached once and shared),
with the same budget, schedule and seed, evaluates them on the ``shapes`` test split with beam 3 and
the official COCO metrics, records every run in ``demo/results.sqlite`` and writes the leaderboard as a
terminal table, ``demo/leaderboard.html`` (self-contained) and ``demo/leaderboard.png``. Re-running
resumes: finished runs are not redone.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

DECODERS = ["gru", "gru-stacked", "gru-attn", "lstm"]
ENCODER = "resnet10t"
STEPS = 1200
SEEDS = [0]
OVERRIDES = [
    "encoder.img_size=64",
    "encoder.freeze=true",
    "decoder.embed_size=128",
    "decoder.hidden_size=256",
    "tokenizer.min_count=0",
    "train.batch_size=64",
    "train.lr=0.002",
    "train.warmup_steps=100",
    "train.val_images=100",
]


def main(argv: list[str] | None = None) -> int:
    from zoo.commands.compare import show_leaderboard
    from zoo.compare import CompareConfig, compare

    ap = argparse.ArgumentParser(prog="python -m zoo.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--encoder", default=ENCODER)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ZOO_FEATURE_CACHE", str(out / "feature-cache"))
    t0 = time.perf_counter()
    cfg = CompareConfig(
        encoders=[args.encoder], decoders=DECODERS, tokenizers=["word"], data="shapes",
        seeds=[int(s) for s in args.seeds.split(",")], train={"steps": args.steps}, split="test",
        beam_size=3, max_len=20, overrides=OVERRIDES,
    )
    db = out / "results.sqlite"
    summaries = compare(cfg, out / "runs", db_path=db, progress=True)
    print()
    show_leaderboard([s["record_id"] for s in summaries], str(db), resamples=1000,
                     html=str(out / "leaderboard.html"), plot=str(out / "leaderboard.png"))
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; results database: {db}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
