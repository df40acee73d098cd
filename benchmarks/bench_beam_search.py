"""Beam search: the batched ``zoo.generation.beam_search`` vs the one-image-at-a-time
``beam_search_reference``, same decoder, same images, same rules; captions must be identical.

Decoder: ``gru-attn`` (vocab 10,000, embed 256, hidden 512, attention 512, grid 49×512), random weights.
With the default init a random decoder settles into a fixed point: every caption is 1 token or max_len.
So that captions end at varied lengths like real ones, the weights are scaled (embeddings ×20, recurrent
×2, output ×8: the chosen word moves the state, the word distribution is peaked) and an <eos> bias is
calibrated (bisection on 32 other images, same search settings) for a median length of ~12 tokens. The
length distribution of the benchmarked captions is reported. The batched search also runs with
``return_attention=True`` (the winners' weights over the grid kept), interleaved with the plain runs:
``attention_cost_ratio`` is its time over the plain one. Beam 3, length_penalty 1, max_len 20, 500 images
in batches of 100 for the batched search (median of 3 runs; the reference runs once, as it takes
minutes). torch threads: 2 by default (``--threads``). The batched search gains from the second thread
(its matrix products are compute-bound), the reference hardly (one row at a time: memory-bound);
measured on an idle 2-core machine: ×16 with 2 threads, ×9.6 with 1. On a busy machine use
``--threads 1``: OpenMP threads spin at barriers while another process holds the other core.

    .venv/bin/python benchmarks/bench_beam_search.py [--quick] [--threads 2]

Only a full run (not ``--quick``) writes benchmarks/results/bench_beam_search.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import zoo
from zoo.generation.beam import beam_search, beam_search_reference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, report  # noqa: E402

BOS, EOS = zoo.Tokenizer.bos_id, zoo.Tokenizer.eos_id


def features(n: int, grid: int, channels: int, seed: int, device: torch.device) -> zoo.Features:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, grid, channels, generator=g)
    return zoo.Features(x, x.mean(1)).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


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
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when available)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    cfg = dict(images=60 if args.quick else 500, chunk=100, vocab=10000, embed=256, hidden=512,
               attention=512, grid=49, channels=512, beam=3, max_len=20, length_penalty=1.0)
    V, C = cfg["vocab"], cfg["channels"]
    dec = zoo.create_decoder("gru-attn", V, C, embed_size=cfg["embed"], hidden_size=cfg["hidden"],
                             attention_size=cfg["attention"], dropout=0.0).eval().to(device)
    dec.embed.weight.mul_(20.0)
    dec.cell.weight_hh.mul_(2.0)
    dec.head.linear.weight.mul_(8.0)
    kw = dict(beam_size=cfg["beam"], max_len=cfg["max_len"], length_penalty=cfg["length_penalty"])
    eos_bias = calibrate_eos(dec, features(32, cfg["grid"], C, seed=1, device=device), target=12, **kw)
    feats = features(cfg["images"], cfg["grid"], C, seed=2, device=device)
    kw.update(bos_id=BOS, eos_id=EOS)

    def run_batched(return_attention: bool = False) -> tuple[float, list]:
        sync(device)
        t0 = time.perf_counter()
        hyps = []
        for start in range(0, cfg["images"], cfg["chunk"]):
            idx = torch.arange(start, min(start + cfg["chunk"], cfg["images"]), device=device)
            hyps += beam_search(dec, feats.index_select(idx), **kw, return_attention=return_attention)
        sync(device)
        return time.perf_counter() - t0, hyps

    # cheap: the median of 3 damps noise on a shared machine; with and without attention interleaved
    runs, runs_att = [], []
    for _ in range(3):
        runs.append(run_batched())
        runs_att.append(run_batched(return_attention=True))
    t_batched = statistics.median(t for t, _ in runs)
    t_attention = statistics.median(t for t, _ in runs_att)
    batched = runs[0][1]
    print(f"batched beam_search: {t_batched:.2f}s for {cfg['images']} images "
          f"({t_attention:.2f}s keeping the winners' attention)", flush=True)
    sync(device)
    t0 = time.perf_counter()
    reference = beam_search_reference(dec, feats, **kw)
    sync(device)
    t_reference = time.perf_counter() - t0
    print(f"beam_search_reference: {t_reference:.2f}s", flush=True)

    same = [h.tokens for h in batched] == [h.tokens for h in reference]
    lengths = sorted(len(h.tokens) for h in batched)
    figures = {
        "what": "gru-attn, batched beam_search vs beam_search_reference, identical captions required",
        "quick": args.quick,
        "device": str(device),
        "config": {**cfg, "eos_bias": round(eos_bias, 3),
                   "weights": "random; embed ×20, weight_hh ×2, output ×8, calibrated eos bias"},
        "batched_s": round(t_batched, 3),
        "reference_s": round(t_reference, 3),
        "ratio": round(t_reference / t_batched, 2),
        "with_attention_s": round(t_attention, 3),
        "attention_cost_ratio": round(t_attention / t_batched, 3),
        "attention_captions_identical": [h.tokens for h in runs_att[0][1]] == [h.tokens for h in batched],
        "captions_identical": same,
        "n_different": sum(a.tokens != b.tokens for a, b in zip(batched, reference)),
        "caption_length": {
            "quartiles": [lengths[0]] + [lengths[len(lengths) * q // 4] for q in (1, 2, 3)] + [lengths[-1]],
            "ended_on_eos": sum(h.tokens[-1] == EOS for h in batched),
        },
    }
    if args.quick:  # a smoke run: printed, not recorded
        print(json.dumps({"benchmark": "bench_beam_search", **figures, "machine": machine()}))
    else:
        report("bench_beam_search", figures)

if __name__ == "__main__":
    main()
