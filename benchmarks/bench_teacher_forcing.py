"""Teacher forcing: the decoders' fused ``forward`` vs the step loop ``forward_stepwise``, one training step.

For ``gru``, ``gru-stacked`` and ``lstm`` the fused path is one ``nn.GRU``/``nn.LSTM`` call over the whole
sequence plus one output projection over (B·T, H); the step loop calls the same modules T times. For
``gru-attn`` both must loop over time; its fused ``forward`` saves the per-step output projection and
embedding calls, and an extra baseline, "naive", also recomputes the attention projection W_g·grid at
every step (what ``prepare`` exists to avoid).

A training step is forward + cross-entropy + backward on the same batch for both paths (dropout 0, so both
compute the same function and their losses must agree to 1e-5). The two paths alternate; the minimum over
the repeats is the headline figure (least disturbed by other load on a shared machine), the median is
reported too. Also reported: the time of the output layer + loss alone (Linear H→V on all B·T positions,
forward and backward), which both paths pay in full: with a 10,000-word vocabulary it is most of a
training step, and it caps the speed-up any fusion of the recurrence can give; "ratio_beyond_output_layer"
is (step loop − that) / (fused − that), the speed-up on the rest. torch threads: 1 by
default (``--threads``). Only a full run (not ``--quick``) writes
benchmarks/results/bench_teacher_forcing.json.

    .venv/bin/python benchmarks/bench_teacher_forcing.py [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

import zoo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, report  # noqa: E402

BOS = zoo.Tokenizer.bos_id


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def naive_attention(vocab: int, feature_dim: int, **opts: object) -> zoo.Decoder:
    """gru-attn with W_g·grid recomputed at every step instead of once in ``prepare``."""
    base = zoo.get_registry().get("decoder", "gru-attn").factory

    class NaiveAttention(base):  # type: ignore[valid-type, misc]
        def attend(self, h, memory):  # type: ignore[no-untyped-def]
            return super().attend(h, memory._replace(keys=self.att_grid(memory.grid)))

    return NaiveAttention(vocab, feature_dim, **opts)


def train_step(run: Callable, feats: zoo.Features, tokens: torch.Tensor, vocab: int) -> tuple[float, float]:
    """Seconds for forward + loss + backward, and the loss."""
    sync()
    t0 = time.perf_counter()
    logits = run(feats, tokens[:, :-1])
    loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), tokens[:, 1:].reshape(-1))
    loss.backward()
    sync()
    return time.perf_counter() - t0, float(loss)


def compare(fused: zoo.Decoder, baseline: zoo.Decoder, feats: zoo.Features, tokens: torch.Tensor,
            vocab: int, repeats: int) -> dict:
    """``fused.forward`` vs ``baseline.forward_stepwise`` (the same weights), alternating, after one
    warm-up round. The minimum over repeats is the figure least disturbed by other load on the machine;
    the median is reported too."""
    fused.train()
    baseline.train()
    fused_t, step_t = [], []
    loss_f = loss_s = float("nan")
    for i in range(repeats + 1):
        fused.zero_grad(set_to_none=True)
        tf, loss_f = train_step(fused, feats, tokens, vocab)
        baseline.zero_grad(set_to_none=True)
        ts, loss_s = train_step(baseline.forward_stepwise, feats, tokens, vocab)
        if i:
            fused_t.append(tf)
            step_t.append(ts)
    f, s = min(fused_t), min(step_t)
    return {
        "fused_s": round(f, 4),
        "stepwise_s": round(s, 4),
        "ratio": round(s / f, 2),
        "fused_median_s": round(statistics.median(fused_t), 4),
        "stepwise_median_s": round(statistics.median(step_t), 4),
        "loss_fused": loss_f,
        "loss_stepwise": loss_s,
        "loss_abs_diff": abs(loss_f - loss_s),
        "losses_match_1e-5": abs(loss_f - loss_s) <= 1e-5,
    }


def output_layer_floor(rows: int, hidden: int, vocab: int, repeats: int, device: torch.device) -> float:
    """Seconds for the part every path must do alike: logits = Linear(H→V) on all B·T positions,
    cross-entropy and backward. It bounds how much a fused recurrence can save."""
    layer = nn.Linear(hidden, vocab).to(device)
    h = torch.randn(rows, hidden, device=device, requires_grad=True)
    target = torch.randint(0, vocab, (rows,), device=device)
    times = []
    for _ in range(repeats + 1):
        layer.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        nn.functional.cross_entropy(layer(h), target).backward()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, 2 repeats: a smoke run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuDNN's fused RNN kernels)")
    ap.add_argument("--vocab", type=int, default=None,
                    help="vocabulary size (default 10,000, COCO scale); results go to bench_teacher_forcing-vocabN.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.quick:
        cfg = dict(batch=16, steps=8, vocab=2000, embed=128, hidden=256, grid=16, channels=256, repeats=2)
    else:
        cfg = dict(batch=64, steps=16, vocab=10000, embed=256, hidden=512, grid=49, channels=512, repeats=5)
    if args.repeats:
        cfg["repeats"] = args.repeats
    if args.vocab:
        cfg["vocab"] = args.vocab
    B, T, V, C = cfg["batch"], cfg["steps"], cfg["vocab"], cfg["channels"]
    grid = torch.randn(B, cfg["grid"], C)
    feats = zoo.Features(grid, grid.mean(1)).to(device)
    tokens = torch.randint(4, V, (B, T + 1), device=device)
    tokens[:, 0] = BOS
    opts = dict(embed_size=cfg["embed"], hidden_size=cfg["hidden"], dropout=0.0)

    floor = output_layer_floor(B * T, cfg["hidden"], V, cfg["repeats"], device)
    print(f"output layer + loss alone (both paths pay it): {floor:.3f}s", flush=True)
    results = {}
    for name in ["gru", "gru-stacked", "lstm", "gru-attn"]:
        extra = {"attention_size": cfg["hidden"]} if name == "gru-attn" else {}
        dec = zoo.create_decoder(name, V, C, **opts, **extra).to(device)
        res = results[name] = compare(dec, dec, feats, tokens, V, cfg["repeats"])
        beyond = (res["stepwise_s"] - floor) / (res["fused_s"] - floor) if res["fused_s"] > floor else None
        res["ratio_beyond_output_layer"] = None if beyond is None else round(beyond, 2)
        print(f"{name:12s} fused {res['fused_s']:.3f}s  step loop {res['stepwise_s']:.3f}s  "
              f"×{res['ratio']} (×{res['ratio_beyond_output_layer']} without the output layer)  "
              f"|Δloss| {res['loss_abs_diff']:.1e}", flush=True)
    naive = naive_attention(V, C, **opts, attention_size=cfg["hidden"]).to(device)
    naive.load_state_dict(dec.state_dict())  # the gru-attn just measured
    res = results["gru-attn-vs-naive-stepwise"] = compare(dec, naive, feats, tokens, V, cfg["repeats"])
    print(f"{'gru-attn':12s} fused {res['fused_s']:.3f}s  naive step loop (W_g·grid every step) "
          f"{res['stepwise_s']:.3f}s  ×{res['ratio']}", flush=True)

    figures = {
        "what": "one training step (forward+CE+backward): fused forward vs forward_stepwise",
        "quick": args.quick,
        "device": str(device),
        "config": cfg,
        "output_layer_floor_s": round(floor, 4),
        "results": results,
        "all_losses_match": all(r["losses_match_1e-5"] for r in results.values()),
    }
    if args.quick:  # a smoke run: printed, not recorded
        print(json.dumps({"benchmark": "bench_teacher_forcing", **figures, "machine": machine()}))
    else:
        report("bench_teacher_forcing" + (f"-vocab{args.vocab}" if args.vocab else ""), figures)

if __name__ == "__main__":
    main()
