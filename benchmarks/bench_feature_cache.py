"""Feature cache: one decoder epoch from cached features vs with the frozen encoder in the loop.

Both sides train the same `gru` decoder for one epoch over the same (image, caption) pairs of `shapes`
with the same frozen encoder; one reads the features from the on-disk cache (built once, timed
separately), the other decodes and encodes every image of every batch. Prints the ratio and one JSON line
(benchmarks/results/bench_feature_cache.json).

Also the cost of checking an entry's block checksums when it is opened (what every run that uses the cache
pays, so that a damaged entry is never trained on): opening the entry verified vs unverified, measured in
the same run on the entry just built, as a ratio of the epoch from the cache with each. The file is in the
page cache here (just written), so this is the CRC's own cost; from a cold disk, add one sequential read of
the entry.

    python benchmarks/bench_feature_cache.py [--encoder resnet18] [--img-size 128] [--images 600]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    import torch

    torch.set_num_threads(args.threads)
    from zoo.training.runs import RunSpec, execute

    tmp = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    os.environ["ZOO_FEATURE_CACHE"] = str(tmp / "cache")
    pairs = args.images * 5
    steps = pairs // 64

    def spec(cache: bool) -> RunSpec:
        return RunSpec(
            encoder=args.encoder, decoder="gru", tokenizer="word", data="shapes",
            encoder_kwargs={"img_size": args.img_size, "freeze": True},
            decoder_kwargs={"embed_size": 128, "hidden_size": 256}, tokenizer_kwargs={"min_count": 0},
            data_options={"num_train": args.images, "num_val": 10, "num_test": 10, "image_size": args.img_size},
            val_split=None,
            train={"steps": steps, "batch_size": 64, "cache_features": cache, "progress": False, "log_every": 10**9},
        )

    t0 = time.perf_counter()
    cached = execute(spec(True), tmp / "cached", progress=False)
    total_cached = time.perf_counter() - t0  # includes building the cache once
    in_loop = execute(spec(False), tmp / "loop", progress=False)
    epoch_cached = pairs / cached.train_images_per_s
    verify = _verify_cost(tmp / "cache")
    epoch_loop = pairs / in_loop.train_images_per_s
    build = total_cached - epoch_cached
    ratio = epoch_loop / epoch_cached
    print(f"{args.encoder} @ {args.img_size}px, {args.images} images x 5 captions, {steps} steps of gru")
    print(f"  epoch with encoder in the loop: {epoch_loop:7.2f} s")
    print(f"  epoch from the feature cache:   {epoch_cached:7.2f} s   (cache built once in ~{build:.1f} s)")
    print(f"  ratio: {ratio:.1f}x")
    with_check = epoch_cached + verify["open_verified_s"]
    without = epoch_cached + verify["open_unverified_s"]
    print(f"  opening the entry ({verify['entry_mb']:.1f} MB): {verify['open_verified_s'] * 1e3:.1f} ms with its "
          f"checksums checked ({verify['verify_gb_per_s']:.2f} GB/s), {verify['open_unverified_s'] * 1e3:.2f} ms without")
    print(f"  epoch from the cache, verified vs unverified open: {with_check / without:.4f}x")
    report("bench_feature_cache", {
        "encoder": args.encoder, "img_size": args.img_size, "images": args.images, "steps": steps,
        "epoch_encoder_in_loop_s": epoch_loop, "epoch_from_cache_s": epoch_cached,
        "cache_build_s_approx": build, "speedup": ratio,
        "same_final_loss": abs((cached.final_loss or 0) - (in_loop.final_loss or 0)) < 1e-3,
        "final_loss_cached": cached.final_loss, "final_loss_in_loop": in_loop.final_loss,
        **verify, "epoch_verified_vs_unverified_open": with_check / without,
    })


def _verify_cost(root: Path, repeats: int = 5) -> dict[str, float]:
    """Opening the one entry under ``root``: with its block checksums checked (``verify=True``, what a run
    does) and without, best of ``repeats`` each, on the same entry in the same run."""
    import json
    import time

    from zoo.data.feature_cache import _valid

    (folder,) = [p for p in root.iterdir() if (p / "meta.json").exists()]
    key = json.loads((folder / "meta.json").read_text())["key"]
    size = sum((folder / name).stat().st_size for name in ("grid.npy", "pooled.npy"))

    def best(verify: bool) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            assert _valid(folder, key, verify=verify) is not None
            times.append(time.perf_counter() - t0)
        return min(times)

    verified, unverified = best(True), best(False)
    return {"entry_mb": size / 1e6, "open_verified_s": verified, "open_unverified_s": unverified,
            "verify_gb_per_s": size / 1e9 / max(verified - unverified, 1e-9)}


if __name__ == "__main__":
    main()
