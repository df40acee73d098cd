"""CIDEr-D: zoo.evaluation.cider.CiderD vs pycocoevalcap's Cider on COCO val2014, in one run.

Every one of the 40,504 val2014 images is scored with its first human caption as the candidate and its
other captions as the references (the README's "about 0.86"). Captions are lower-cased and split on
non-alphanumerics (what the PTB tokenizer yields for plain captions); both scorers get the same tokens.
Prints the per-image agreement, both timings and their ratio, then one JSON line, also written to
benchmarks/results/bench_cider.json (bench_cider-quick.json with --quick).

    python benchmarks/bench_cider.py            # all 40,504 images (~30 s, mostly pycocoevalcap)
    python benchmarks/bench_cider.py --quick    # 4,000 images
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import json
import os
import platform
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "coco-captions-val2014" / "captions_val2014.json.gz"
WORD = re.compile(r"[a-z0-9]+")


def load(path: Path, limit: int | None) -> tuple[dict, dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    caps: dict[int, list[str]] = defaultdict(list)
    for ann in data["annotations"]:
        caps[ann["image_id"]].append(" ".join(WORD.findall(ann["caption"].lower())))
    ids = list(caps)[:limit] if limit else list(caps)
    return {i: caps[i][1:] for i in ids}, {i: caps[i][:1] for i in ids}


def timed(fn, *args):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - w, time.process_time() - c


def version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4,000 images instead of all 40,504")
    ap.add_argument("--repeats", type=int, default=3, help="runs of ours (the median is reported)")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    if not args.data.exists():
        raise SystemExit(f"needs {args.data} (the shared test data)")

    from pycocoevalcap.cider.cider import Cider

    from zoo.evaluation.cider import CiderD

    gts, res = load(args.data, 4000 if args.quick else None)
    print(f"{len(gts)} images, {sum(map(len, gts.values()))} references")

    ours_runs, ours_cpu = [], []
    for _ in range(max(1, args.repeats)):
        (mean, per_image), wall, cpu = timed(CiderD().compute_score, gts, res)
        ours_runs.append(wall)
        ours_cpu.append(cpu)
    print(f"zoo CiderD:          mean {mean:.6f}  {statistics.median(ours_runs):.3f} s (runs {', '.join(f'{t:.3f}' for t in ours_runs)})")
    (ref_mean, ref_per_image), ref_wall, ref_cpu = timed(Cider().compute_score, gts, res)
    print(f"pycocoevalcap Cider: mean {ref_mean:.6f}  {ref_wall:.3f} s")
    diff = float(np.max(np.abs(np.asarray(per_image) - np.asarray(ref_per_image))))
    ours = statistics.median(ours_runs)
    print(
        f"max |diff| per image {diff:.2e}; speed-up x{ref_wall / ours:.1f} (wall, median run), "
        f"x{ref_cpu / statistics.median(ours_cpu):.1f} (CPU), x{ref_wall / ours_runs[0]:.1f} (first call)"
    )
    corpus, build_s, _ = timed(CiderD.from_corpus, gts)
    print(f"CiderD.from_corpus on these references: {build_s:.3f} s ({len(corpus.document_frequency)} n-grams)")

    result = {
        "benchmark": "bench_cider",
        "images": len(gts),
        "references": sum(map(len, gts.values())),
        "mean_ours": mean,
        "mean_pycocoevalcap": float(ref_mean),
        "max_abs_diff_per_image": diff,
        "ours_s": ours,
        "ours_s_runs": ours_runs,
        "pycocoevalcap_s": ref_wall,
        "speedup_wall": ref_wall / ours,
        "speedup_cpu": ref_cpu / statistics.median(ours_cpu),
        "speedup_first_call": ref_wall / ours_runs[0],
        "from_corpus_s": build_s,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": version("torch"),
            "pycocoevalcap": version("pycocoevalcap"),
        },
    }
    line = json.dumps(result)
    print(line)
    out = ROOT / "benchmarks" / "results" / ("bench_cider-quick.json" if args.quick else "bench_cider.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(line + "\n")


if __name__ == "__main__":
    main()
