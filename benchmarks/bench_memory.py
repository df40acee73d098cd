"""Peak resident memory: scoring all 40,504 COCO val2014 images and decoding 5,000 images.

Each phase runs in a fresh subprocess and reports its peak RSS (``ru_maxrss``; Java children counted
separately): (1) our CIDEr-D over 40,504 images (one caption against the others), (2) pycocoevalcap's
CIDEr on the same input, the reference, (3) ``zoo.evaluation.model_eval.evaluate_model`` decoding 5,000 `shapes`
images with `gru-attn` at beam 3 (streamed through a DataLoader) and scoring them with BLEU, ROUGE-L and
CIDEr-D after the PTB tokenizer. Target: every phase under 4 GB. One JSON line at the end
(benchmarks/results/bench_memory.json).

    python benchmarks/bench_memory.py [--decode-images 5000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "coco-captions-val2014" / "captions_val2014.json.gz"

PHASE = r'''
import gzip, json, os, re, resource, sys, time
from collections import defaultdict
os.environ.setdefault("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
phase, arg = sys.argv[1], sys.argv[2]
t = time.perf_counter()
def refs():
    data = json.load(gzip.open(arg, "rt"))
    caps = defaultdict(list)
    for a in data["annotations"]:
        caps[a["image_id"]].append(" ".join(re.findall(r"[a-z0-9]+", a["caption"].lower())))
    del data
    return {i: c[1:] for i, c in caps.items()}, {i: c[:1] for i, c in caps.items()}
if phase == "ours":
    from zoo.evaluation.cider import CiderD
    gts, res = refs()
    score, _ = CiderD().compute_score(gts, res)
    info = {"images": len(gts), "cider_d": score}
elif phase == "pycocoevalcap":
    from pycocoevalcap.cider.cider import Cider
    gts, res = refs()
    score, _ = Cider().compute_score(gts, res)
    info = {"images": len(gts), "cider_d": score}
else:
    import torch
    torch.set_num_threads(2)
    import zoo
    from zoo.data.datasets import load_dataset
    from zoo.evaluation.model_eval import evaluate_model
    n = int(arg)
    ds = load_dataset("shapes", split="test", num_train=50, num_val=10, num_test=n)
    tok = zoo.create_tokenizer("word", load_dataset("shapes", split="train", num_train=500).captions(), min_count=0)
    torch.manual_seed(0)
    model = zoo.create_model(encoder="resnet10t", decoder="gru-attn", tokenizer=tok,
                             encoder_kwargs={"img_size": 64, "freeze": True},
                             decoder_kwargs={"embed_size": 128, "hidden_size": 256, "attention_size": 128})
    ev = evaluate_model(model, ds, beam_size=3, max_len=16, metrics=("bleu", "rouge-l", "cider-d"),
                        batch_size=100, progress=False)
    info = {"images": ev.num_images, "decode_images_per_s": ev.decode_images_per_s}
self_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
child_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
print(json.dumps({**info, "peak_rss_gb": self_gb, "peak_rss_children_gb": child_gb, "seconds": time.perf_counter() - t}))
'''


def run(phase: str, arg: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PHASE, phase, arg], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decode-images", type=int, default=5000)
    args = ap.parse_args()
    ours = run("ours", str(DATA))
    ref = run("pycocoevalcap", str(DATA))
    dec = run("decode", str(args.decode_images))
    for name, r in (("our CIDEr-D, 40,504 images", ours), ("pycocoevalcap CIDEr, 40,504 images", ref),
                    (f"decode+score {dec['images']} images (gru-attn, beam 3)", dec)):
        print(f"{name:<45} peak RSS {r['peak_rss_gb']:.2f} GB (children {r['peak_rss_children_gb']:.2f} GB), {r['seconds']:.1f} s")
    report("bench_memory", {
        "score_ours": ours, "score_pycocoevalcap": ref, "decode": dec,
        "rss_ratio_ours_vs_pycocoevalcap": ours["peak_rss_gb"] / ref["peak_rss_gb"],
        "all_under_4gb": all(r["peak_rss_gb"] < 4 and r["peak_rss_children_gb"] < 4 for r in (ours, dec)),
    })


if __name__ == "__main__":
    main()
