"""Teacher forcing: the decoders' training path vs the step loop ``forward_stepwise``, one training step.

For ``gru``, ``gru-stacked`` and ``lstm`` the fused path is one ``nn.GRU``/``nn.LSTM`` call over the whole
sequence plus one output projection over (B·T, H); the step loop calls the same modules T times. For
``gru-attn`` both must loop over time; its fused ``forward`` saves the per-step output projection and
embedding calls, and an extra baseline, "naive", also recomputes the attention projection W_g·grid at
every step (what ``prepare`` exists to avoid).

Two batches:

* **fixed** — every caption T tokens long, no padding: the fusion alone.
* **coco-lengths** — caption lengths drawn from the 202,654 COCO val2014 captions (words cut at
  ``TrainConfig.max_caption_len`` = 16, then <bos>/<eos>; the batch as wide as its longest caption, as
  ``zoo train`` makes it), about a third of the positions padding. Three paths: the step loop and the fused ``forward``
  over every position (padding masked in the loss), and the training path ``CaptionModel.loss`` takes:
  ``forward(..., keep=mask)``, where padding never reaches the output layer and, in ``gru-attn``,
  finished captions leave the step loop. Needs ``../shared/data`` (skipped, and said, without it).

A training step is forward + cross-entropy + backward on the same batch for every path (dropout 0, so all
compute the same function and their losses must agree to 1e-5). The paths alternate; the minimum over
the repeats is the headline figure (least disturbed by other load on a shared machine), the median is
reported too. Also reported: the time of the output layer + loss alone (Linear H→V on all B·T positions,
forward and backward), which the fixed batch's two paths pay in full: with a 10,000-word vocabulary it is
most of a training step, and it caps the speed-up any fusion of the recurrence can give;
"ratio_beyond_output_layer" is (step loop − that) / (fused − that), the speed-up on the rest. torch
threads: 1 by default (``--threads``). Only a full run (not ``--quick``) writes
benchmarks/results/bench_teacher_forcing[-vocabN].json.

    .venv/bin/python benchmarks/bench_teacher_forcing.py [--quick] [--threads 1] [--vocab N]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

import zoo
from zoo.training.config import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, report  # noqa: E402

BOS, EOS, PAD = zoo.Tokenizer.bos_id, zoo.Tokenizer.eos_id, zoo.Tokenizer.pad_id
CAPTIONS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco-captions-val2014" / "captions_val2014.json.gz"

Loss = Callable[[], torch.Tensor]


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


# -- the three ways to compute one batch's teacher-forcing loss ---------------------------------------------
def step_loop(dec: zoo.Decoder, feats: zoo.Features, tokens: torch.Tensor) -> Loss:
    """The reference: ``forward_stepwise`` over every position, padding masked in the loss."""
    inp, tgt = tokens[:, :-1], tokens[:, 1:]
    return lambda: nn.functional.cross_entropy(
        dec.forward_stepwise(feats, inp).reshape(-1, dec.vocab_size), tgt.reshape(-1), ignore_index=PAD
    )


def fused(dec: zoo.Decoder, feats: zoo.Features, tokens: torch.Tensor) -> Loss:
    """The fused ``forward`` over every position, padding masked in the loss."""
    inp, tgt = tokens[:, :-1], tokens[:, 1:]
    return lambda: nn.functional.cross_entropy(
        dec(feats, inp).reshape(-1, dec.vocab_size), tgt.reshape(-1), ignore_index=PAD
    )


def training_path(dec: zoo.Decoder, feats: zoo.Features, tokens: torch.Tensor) -> Loss:
    """What ``CaptionModel.loss`` runs: ``forward(..., keep=mask)``, padding never reaches the output layer."""
    inp, tgt = tokens[:, :-1], tokens[:, 1:]
    keep = tgt != PAD
    return lambda: nn.functional.cross_entropy(dec(feats, inp, keep=keep), tgt[keep])


def race(paths: dict[str, tuple[nn.Module, Loss]], repeats: int) -> dict[str, dict[str, float]]:
    """Forward + loss + backward for each path in turn, ``repeats`` rounds after one warm-up round."""
    times: dict[str, list[float]] = {k: [] for k in paths}
    losses: dict[str, float] = {}
    for i in range(repeats + 1):
        for name, (module, loss_fn) in paths.items():
            module.train()
            module.zero_grad(set_to_none=True)
            sync()
            t0 = time.perf_counter()
            loss = loss_fn()
            loss.backward()
            sync()
            if i:
                times[name].append(time.perf_counter() - t0)
            losses[name] = float(loss.detach())
    return {
        k: {"s": round(min(v), 4), "median_s": round(statistics.median(v), 4), "loss": losses[k]}
        for k, v in times.items()
    }


def versus(ours: dict[str, float], ref: dict[str, float]) -> dict:
    diff = abs(ours["loss"] - ref["loss"])
    return {"ratio": round(ref["s"] / ours["s"], 2), "loss_abs_diff": diff, "losses_match_1e-5": diff <= 1e-5}


def output_layer_floor(rows: int, hidden: int, vocab: int, repeats: int, device: torch.device) -> float:
    """Seconds for the part both fixed-batch paths do alike: logits = Linear(H→V) on all B·T positions,
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


def coco_lengths() -> np.ndarray | None:
    """Word counts of every COCO val2014 caption, or None without ../shared."""
    if not CAPTIONS.is_file():
        return None
    with gzip.open(CAPTIONS, "rt") as fh:
        anns = json.load(fh)["annotations"]
    return np.array([len(re.sub(r"[^a-z0-9 ]+", " ", a["caption"].lower()).split()) for a in anns])


def ragged_batch(words: np.ndarray, batch: int, vocab: int, max_len: int, seed: int) -> torch.Tensor:
    """(B, W) tokens <bos> w.. <eos> pad.. with word counts drawn from ``words`` and cut at ``max_len``,
    the batch as wide as its longest row: what ``batch_encode`` and ``zoo train`` make of real captions."""
    rng = np.random.default_rng(seed)
    n = np.minimum(rng.choice(words, batch), max_len)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.full((batch, int(n.max()) + 2), PAD)
    for i, k in enumerate(n):
        tokens[i, : k + 2] = torch.tensor([BOS, *torch.randint(4, vocab, (int(k),), generator=g).tolist(), EOS])
    return tokens


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
    fixed = torch.randint(4, V, (B, T + 1), device=device)
    fixed[:, 0] = BOS
    lengths = coco_lengths()
    max_len = TrainConfig().max_caption_len
    ragged = None if lengths is None else ragged_batch(lengths, B, V, max_len, seed=0).to(device)
    opts = dict(embed_size=cfg["embed"], hidden_size=cfg["hidden"], dropout=0.0)

    floor = output_layer_floor(B * T, cfg["hidden"], V, cfg["repeats"], device)
    print(f"output layer + loss alone (the fixed batch's paths both pay it): {floor:.3f}s", flush=True)
    if ragged is None:
        print(f"coco-lengths batch skipped: {CAPTIONS} not found", flush=True)
    else:
        scored = float((ragged[:, 1:] != PAD).float().mean())
        print(f"coco-lengths batch: width {ragged.shape[1] - 1}, {scored:.0%} of positions scored", flush=True)
    results: dict[str, dict] = {}
    for name in ["gru", "gru-stacked", "lstm", "gru-attn"]:
        extra = {"attention_size": cfg["hidden"]} if name == "gru-attn" else {}
        dec = zoo.create_decoder(name, V, C, **opts, **extra).to(device)
        t = race({"fused": (dec, fused(dec, feats, fixed)), "step_loop": (dec, step_loop(dec, feats, fixed))}, cfg["repeats"])
        res = results[name] = {"fixed": {**t, **versus(t["fused"], t["step_loop"])}}
        f, s = t["fused"]["s"], t["step_loop"]["s"]
        res["fixed"]["ratio_beyond_output_layer"] = round((s - floor) / (f - floor), 2) if f > floor else None
        line = (f"{name:12s} fixed: fused {f:.3f}s  step loop {s:.3f}s  ×{res['fixed']['ratio']} "
                f"(×{res['fixed']['ratio_beyond_output_layer']} without the output layer)  "
                f"|Δloss| {res['fixed']['loss_abs_diff']:.1e}")
        if ragged is not None:
            r = race({
                "training_path": (dec, training_path(dec, feats, ragged)),
                "fused": (dec, fused(dec, feats, ragged)),
                "step_loop": (dec, step_loop(dec, feats, ragged)),
            }, cfg["repeats"])
            res["coco_lengths"] = {
                **r,
                "vs_step_loop": versus(r["training_path"], r["step_loop"]),
                "vs_fused": versus(r["training_path"], r["fused"]),
            }
            line += (f"\n{'':12s} coco-lengths: training path {r['training_path']['s']:.3f}s  fused "
                     f"{r['fused']['s']:.3f}s  step loop {r['step_loop']['s']:.3f}s  "
                     f"×{res['coco_lengths']['vs_step_loop']['ratio']} vs the step loop, "
                     f"×{res['coco_lengths']['vs_fused']['ratio']} vs fused over padding")
        print(line, flush=True)
    naive = naive_attention(V, C, **opts, attention_size=cfg["hidden"]).to(device)
    naive.load_state_dict(dec.state_dict())  # the gru-attn just measured
    t = race({"fused": (dec, fused(dec, feats, fixed)), "step_loop": (naive, step_loop(naive, feats, fixed))}, cfg["repeats"])
    res = results["gru-attn-vs-naive-stepwise"] = {"fixed": {**t, **versus(t["fused"], t["step_loop"])}}
    print(f"{'gru-attn':12s} fixed: fused {t['fused']['s']:.3f}s  naive step loop (W_g·grid every step) "
          f"{t['step_loop']['s']:.3f}s  ×{res['fixed']['ratio']}", flush=True)

    matches = [v["losses_match_1e-5"] for r in results.values() for k, v in r.items() if k == "fixed"]
    matches += [r["coco_lengths"][k]["losses_match_1e-5"] for r in results.values() if "coco_lengths" in r
                for k in ("vs_step_loop", "vs_fused")]
    figures = {
        "what": "one training step (forward+CE+backward): fused forward / training path vs forward_stepwise",
        "quick": args.quick,
        "device": str(device),
        "config": cfg,
        "coco_lengths_batch": None if ragged is None else {
            "width": ragged.shape[1] - 1,
            "scored_fraction": round(float((ragged[:, 1:] != PAD).float().mean()), 3),
            "max_caption_len": max_len,
        },
        "output_layer_floor_s": round(floor, 4),
        "results": results,
        "all_losses_match": all(matches),
    }
    if args.quick:  # a smoke run: printed, not recorded
        print(json.dumps({"benchmark": "bench_teacher_forcing", **figures, "machine": machine()}))
    else:
        report("bench_teacher_forcing" + (f"-vocab{args.vocab}" if args.vocab else ""), figures)


if __name__ == "__main__":
    main()
