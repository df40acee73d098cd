"""GPU figures (run through benchmarks/gpu.sh on a machine with CUDA; --quick smoke-tests on a CPU).

1. training images/s of each built-in decoder from cached features at COCO scale (7x7x2048 grid, 10k
   vocabulary, batch 256, 16 tokens), fused teacher forcing, bf16 autocast — eager and torch.compile;
2. beam-3 decoding images/s of each decoder from features; SCST training images/s of each decoder (5
   samples per image, CIDEr-D reward, one teacher-forced pass; ``bench_scst.scst_images_per_s``);
3. the time to decode AND score 5,000 images end to end with gru-attn at beam 3: images through a frozen
   ResNet-50 (pinned-memory DataLoader), batched beam search, PTB tokenizer + BLEU/METEOR/ROUGE-L/CIDEr-D.
   Target: <= 60 s on one H200.
Writes benchmarks/results/bench_gpu.json (bench_gpu-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report  # noqa: E402

DECODERS = ["gru", "gru-stacked", "gru-attn", "lstm"]


def sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, CPU allowed (a smoke test)")
    ap.add_argument("--images", type=int, default=5000)
    args = ap.parse_args()
    os.environ.setdefault("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    import torch

    import zoo
    from zoo.generation.beam import beam_search

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type != "cuda" and not args.quick:
        sys.exit("bench_gpu.py needs CUDA (use --quick for a CPU smoke test)")
    B, N, C, V, T = (256, 49, 2048, 10000, 16) if not args.quick else (16, 4, 64, 200, 8)
    steps = 30 if not args.quick else 2
    amp = dev.type == "cuda"
    figures: dict = {"device": str(dev), "batch": B, "grid": [N, C], "vocab": V, "tokens": T}
    feats = zoo.Features(torch.randn(B, N, C, device=dev), torch.randn(B, C, device=dev))
    tokens = torch.randint(4, V, (B, T + 1), device=dev)
    for name in DECODERS:
        for compiled in (False, True):
            torch.manual_seed(0)
            dec = zoo.create_decoder(name, V, C, embed_size=512, hidden_size=512).to(dev)
            fn = torch.compile(dec) if compiled else dec
            opt = torch.optim.AdamW(dec.parameters(), lr=1e-4)
            try:
                for i in range(steps + 3):
                    if i == 3:
                        sync(dev)
                        t0 = time.perf_counter()
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                        logits = fn(feats, tokens[:, :-1])
                    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, V), tokens[:, 1:].reshape(-1))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                sync(dev)
                speed = B * steps / (time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - torch.compile may be unavailable
                speed = None
                figures[f"train_{name}_{'compiled' if compiled else 'eager'}_error"] = repr(exc)[:200]
            figures[f"train_img_s_{name}_{'compiled' if compiled else 'eager'}"] = speed
            print(f"train {name:<12} {'compiled' if compiled else 'eager':<8} {speed or float('nan'):10.0f} img/s")
        dec.eval()
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            beam_search(dec, feats, bos_id=1, eos_id=2, beam_size=3, max_len=T)
            sync(dev)
            t0 = time.perf_counter()
            reps = 3 if not args.quick else 1
            for _ in range(reps):
                beam_search(dec, feats, bos_id=1, eos_id=2, beam_size=3, max_len=T)
            sync(dev)
        figures[f"beam3_img_s_{name}"] = B * reps / (time.perf_counter() - t0)
        print(f"beam-3 {name:<12} {figures[f'beam3_img_s_{name}']:10.0f} img/s")
        from bench_scst import scst_images_per_s

        figures[f"scst_img_s_{name}"] = scst_images_per_s(name, V, C, N, B, steps=10 if not args.quick else 1,
                                                          device=dev, amp=amp,
                                                          **({} if not args.quick else {"embed": 32, "hidden": 32}))
        print(f"scst   {name:<12} {figures[f'scst_img_s_{name}']:10.0f} img/s")

    # end to end: decode and score N images with gru-attn, beam 3
    from zoo.data.datasets import load_dataset
    from zoo.evaluation.model_eval import evaluate_model

    n = args.images if not args.quick else 40
    enc_name, size = ("resnet50", 224) if not args.quick else ("resnet10t", 64)
    ds = load_dataset("shapes", split="test", num_train=200, num_val=10, num_test=n, image_size=size)
    tok = zoo.create_tokenizer("word", load_dataset("shapes", split="train", num_train=200).captions(), min_count=0)
    model = zoo.create_model(encoder=enc_name, decoder="gru-attn", tokenizer=tok,
                             encoder_kwargs={"img_size": size, "freeze": True}).to(dev)
    t0 = time.perf_counter()
    ev = evaluate_model(model, ds, beam_size=3, max_len=20, batch_size=250 if not args.quick else 20,
                        num_workers=min(8, os.cpu_count() or 1), metrics=("bleu", "meteor", "rouge-l", "cider-d"),
                        device=dev, progress=False)
    total = time.perf_counter() - t0
    figures.update({"e2e_images": n, "e2e_encoder": enc_name, "e2e_decode_and_score_s": total,
                    "e2e_decode_images_per_s": ev.decode_images_per_s, "e2e_target_s": 60,
                    "e2e_meets_target": total <= 60 if not args.quick else None})
    print(f"decode + score {n} images (gru-attn, beam 3, {enc_name}): {total:.1f} s")
    report("bench_gpu-quick" if args.quick else "bench_gpu", figures)


if __name__ == "__main__":
    main()
