"""Beam search: the batched ``zoo.generation.beam_search`` vs the one-image-at-a-time
``beam_search_reference``, same decoder, same images, same rules; captions must be identical.

Decoder: ``gru-attn`` (vocab 10,000, embed 256, hidden 512, attention 512, grid 49×512), random weights.
With the default init a random decoder settles into a fixed point: every caption is 1 token or max_len.
So that captions end at varied lengths like real ones, the weights are scaled (embeddings ×20, recurrent
×2, output ×8: the chosen word moves the state, the word distribution is peaked) and an <eos> bias is
calibrated (bisection on 32 other images, same search settings) for a median length of ~12 tokens. The
length distribution of the benchmarked captions is reported. Beam 3, length_penalty 1, max_len 20, 500 images
in batches of 100 for the batched search (median of 3 runs; the reference runs once, as it takes
minutes). torch threads: 1 by default (``--threads``): on a small shared machine a second thread mostly
adds noise (OpenMP threads spin at barriers while another process holds the other core).

    .venv/bin/python benchmarks/bench_beam_search.py [--quick] [--threads 1]

Only a full run (not ``--quick``) writes benchmarks/results/bench_beam_search.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import zoo
from zoo.generation import beam_search, beam_search_reference

RESULTS = Path(__file__).resolve().parent / "results"
BOS, EOS = zoo.Tokenizer.bos_id, zoo.Tokenizer.eos_id


def machine(threads: int) -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": threads,
    }


def features(n: int, grid: int, channels: int, seed: int) -> zoo.Features:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, grid, channels, generator=g)
    return zoo.Features(x, x.mean(1))


def calibrate_eos(dec: zoo.Decoder, feats: zoo.Features, target: float, **kw: object) -> float:
    """An <eos> bias giving a median caption length ≈ ``target`` (lengths fall as the bias grows)."""
    lo, hi = -10.0, 30.0
    base = dec.head.linear.bias[EOS].item()
    for _ in range(10):
        mid = (lo + hi) / 2
        dec.head.linear.bias[EOS] = base + mid
        hyps = beam_search(dec, feats, bos_id=BOS, eos_id=EOS, **kw)
        if statistics.median(len(h.tokens) for h in hyps) > target:
            lo = mid
        else:
            hi = mid
    dec.head.linear.bias[EOS] = base + (lo + hi) / 2
    return (lo + hi) / 2


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 images: a smoke run")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = dict(images=60 if args.quick else 500, chunk=100, vocab=10000, embed=256, hidden=512,
               attention=512, grid=49, channels=512, beam=3, max_len=20, length_penalty=1.0)
    V, C = cfg["vocab"], cfg["channels"]
    dec = zoo.create_decoder("gru-attn", V, C, embed_size=cfg["embed"], hidden_size=cfg["hidden"],
                             attention_size=cfg["attention"], dropout=0.0).eval()
    dec.embed.weight.mul_(20.0)
    dec.cell.weight_hh.mul_(2.0)
    dec.head.linear.weight.mul_(8.0)
    kw = dict(beam_size=cfg["beam"], max_len=cfg["max_len"], length_penalty=cfg["length_penalty"])
    eos_bias = calibrate_eos(dec, features(32, cfg["grid"], C, seed=1), target=12, **kw)
    feats = features(cfg["images"], cfg["grid"], C, seed=2)
    kw.update(bos_id=BOS, eos_id=EOS)

    def run_batched() -> tuple[float, list]:
        t0 = time.perf_counter()
        hyps = []
        for start in range(0, cfg["images"], cfg["chunk"]):
            idx = torch.arange(start, min(start + cfg["chunk"], cfg["images"]))
            hyps += beam_search(dec, feats.index_select(idx), **kw)
        return time.perf_counter() - t0, hyps

    runs = [run_batched() for _ in range(3)]  # cheap: the median of 3 damps noise on a shared machine
    t_batched = statistics.median(t for t, _ in runs)
    batched = runs[0][1]
    print(f"batched beam_search: {t_batched:.2f}s for {cfg['images']} images", flush=True)
    t0 = time.perf_counter()
    reference = beam_search_reference(dec, feats, **kw)
    t_reference = time.perf_counter() - t0
    print(f"beam_search_reference: {t_reference:.2f}s", flush=True)

    same = [h.tokens for h in batched] == [h.tokens for h in reference]
    lengths = sorted(len(h.tokens) for h in batched)
    out = {
        "benchmark": "bench_beam_search",
        "what": "gru-attn, batched beam_search vs beam_search_reference, identical captions required",
        "quick": args.quick,
        "config": {**cfg, "eos_bias": round(eos_bias, 3),
                   "weights": "random; embed ×20, weight_hh ×2, output ×8, calibrated eos bias"},
        "machine": machine(args.threads),
        "batched_s": round(t_batched, 3),
        "reference_s": round(t_reference, 3),
        "ratio": round(t_reference / t_batched, 2),
        "captions_identical": same,
        "n_different": sum(a.tokens != b.tokens for a, b in zip(batched, reference)),
        "caption_length": {
            "quartiles": [lengths[0]] + [lengths[len(lengths) * q // 4] for q in (1, 2, 3)] + [lengths[-1]],
            "ended_on_eos": sum(h.tokens[-1] == EOS for h in batched),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    line = json.dumps(out)
    if not args.quick:
        (RESULTS / "bench_beam_search.json").write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
