"""``make demo``: the four built-in decoders compared on the embedded ``shapes`` data set, on a CPU,
and gru-attn once more after self-critical training.

Trains gru, gru-stacked, gru-attn and lstm with cross-entropy on the same frozen encoder (features cached
once and shared), with the same budget, schedule and seed; then continues gru-attn from its XE
``best.safetensors`` with SCST (``scst``: CIDEr-D reward, NSC baseline; ``SCST_STEPS`` steps at
``SCST_LR``). Every run is evaluated on the ``shapes`` test split with beam 3 and the official COCO
metrics, recorded in ``demo/results.sqlite``, and the leaderboard is written as a terminal table,
``demo/leaderboard.html`` (self-contained) and ``demo/leaderboard.png``. Re-running resumes: finished
runs are not redone.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from zoo.commands.compare import show_leaderboard
from zoo.results.compare import CompareConfig, compare

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
SCST_DECODER = "gru-attn"
SCST_STEPS = 300
SCST_LR = "5e-4"
#: the SCST run's settings on top of OVERRIDES (it starts from the XE run's best checkpoint)
SCST_OVERRIDES = [f"train.lr={SCST_LR}", "train.warmup_steps=0", "train.eval_every=100"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zoo.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--encoder", default=ENCODER)
    ap.add_argument("--scst-steps", type=int, default=SCST_STEPS, help="SCST steps for gru-attn (0: no SCST row)")
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
    if args.scst_steps:
        scst = replace(cfg, decoders=[SCST_DECODER], objectives=["xe", "scst"],
                       objective_overrides=[*SCST_OVERRIDES, f"train.steps={args.scst_steps}"])
        summaries += compare(scst, out / "runs", db_path=db, progress=True)
    record_ids = list(dict.fromkeys(s["record_id"] for s in summaries))  # the XE gru-attn row once
    print()
    show_leaderboard(record_ids, str(db), resamples=1000,
                     html=str(out / "leaderboard.html"), plot=str(out / "leaderboard.png"))
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; results database: {db}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
