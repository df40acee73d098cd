"""Self-critical training: the reward step vs a per-caption dictionary CIDEr-D, and an SCST step vs an XE step.

A COCO-sized SCST batch: 50 images × 5 samples, a 10,000-word vocabulary, caption lengths from COCO
val2014 (``../shared/data/coco-captions-val2014``: its 202,654 captions, words ranked by frequency, the
top 9,996 kept and the rest ``<unk>``, cut at 16 words as ``zoo train`` cuts them, each with its <eos>).
The val2014 images play the training set: their references give the document frequencies (40,504
documents), and the 50 rewarded images are among them, as in training.

(a) **Reward step**, target ≥ 20×: ours is ``zoo.training.reward.CiderReward`` (token ids laid out for the
    vectorised ``zoo.evaluation.cider.CiderD`` machinery, document frequencies built once); the reference is a plain
    per-caption CIDEr-D in the spirit of the official scorer (pycocoevalcap's ``cider_scorer.py`` /
    the self-critical reference implementations' ``CiderD``): a ``Counter`` of n-gram tuples per sentence,
    ``{n-gram: document count}`` dictionary for the same training document frequencies, then the tf-idf
    vectors, clipped cosine and length penalty caption by caption. Samples are each image's own references
    with ~40% of their words replaced at random (so they share n-grams with the references, as trained
    model samples do). Rewards must agree to 1e-9. Both sides' one-off tables (document frequencies) are
    built outside the timing.
(b) **SCST step vs XE step** on the same 50 images, target ≤ 3×: XE is ``CaptionModel.loss`` on the images'
    5 references each (250 rows) + backward; SCST is the ``scst`` objective's step (sampling 5 per image
    with ``zoo.generation.sample``, the reward, the NSC baseline, the one teacher-forced pass) + backward.
    The untrained decoders' output bias on <eos> is set so that samples end after ~11 tokens on average
    (COCO's mean), or untrained samples would all run to the 16-token limit. Decoders ``gru`` and
    ``gru-attn``, embed 256, hidden 512, a 7×7×512 feature grid, 1 torch thread.

(c) ``--conventions``: not a speed figure but how far apart the two reference conventions of the ``scst``
    objective put rewards (``reference_convention`` zoo vs ruotianluo; ``docs/scst.md``): all val2014
    captions as training references, uncut and cut at 16 words, 10,000 samples (2,000 images × 5, each a
    reference with ~40% of its words replaced); mean and largest |difference|, overall and on images with
    a caption of 16 words or more (the ones the cut touches).

Needs ``../shared/data`` (exits saying so without it). The minimum over repeats is the headline.

    .venv/bin/python benchmarks/bench_scst.py [--quick] [--threads 1] [--conventions]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# ../shared next to the checkout (or next to the folder of worktrees holding it)
CANDIDATES = [ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data"]
CAPTIONS = next((c for c in CANDIDATES if c.exists()), CANDIDATES[0]) / "coco-captions-val2014" / "captions_val2014.json.gz"
PAD, BOS, EOS, UNK = 0, 1, 2, 3
MAX_WORDS = 16


def coco_words(vocab: int) -> tuple[dict[int, list[list[str]]], dict[str, int]]:
    """val2014's captions per image as lower-case words, and the ids of the ``vocab - 4`` most common words."""
    with gzip.open(CAPTIONS, "rt") as fh:
        anns = json.load(fh)["annotations"]
    per_image: dict[int, list[list[str]]] = {}
    for a in anns:
        per_image.setdefault(a["image_id"], []).append(re.sub(r"[^a-z0-9 ]+", " ", a["caption"].lower()).split())
    counts = Counter(w for caps in per_image.values() for c in caps for w in c)
    return per_image, {w: i + 4 for i, (w, _) in enumerate(counts.most_common(vocab - 4))}


def coco_corpus(vocab: int) -> tuple[list[list[np.ndarray]], np.ndarray]:
    """val2014 references per image as token ids (<eos> included), and the word count of every caption."""
    per_image, ids = coco_words(vocab)
    docs = [[np.array([ids.get(w, UNK) for w in c[:MAX_WORDS]] + [EOS]) for c in caps] for caps in per_image.values()]
    lengths = np.array([len(c) for caps in per_image.values() for c in caps])
    return docs, lengths


# -- the reference: a plain per-caption CIDEr-D ----------------------------------------------------------
def ngrams(words: tuple, n: int = 4) -> Counter:
    out: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            out[words[i: i + k]] += 1
    return out


def reference_df(docs: list[list[np.ndarray]]) -> dict[tuple, int]:
    """{n-gram: number of images whose references contain it}, as the official scorer counts."""
    df: Counter = Counter()
    for refs in docs:
        seen = set()
        for r in refs:
            seen.update(ngrams(tuple(r.tolist())))
        df.update(seen)
    return dict(df)


def reference_cider(cands: list[tuple], refs: list[list[tuple]], df: dict[tuple, int], n_docs: int,
                    n: int = 4, sigma: float = 6.0) -> np.ndarray:
    """CIDEr-D caption by caption with dictionaries, in the spirit of pycocoevalcap's cider_scorer."""
    ref_len = math.log(float(n_docs))

    def vec(counts: Counter) -> tuple[list[dict], list[float], int]:
        v = [dict() for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            d = math.log(max(1.0, df.get(gram, 0.0)))
            v[k][gram] = float(tf) * (ref_len - d)
            norm[k] += v[k][gram] ** 2
            if k == 1:
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    def sim(vh, vr, nh, nr, lh, lr) -> np.ndarray:
        delta = float(lh - lr)
        val = np.zeros(n)
        for k in range(n):
            for gram, w in vh[k].items():
                val[k] += min(w, vr[k].get(gram, 0.0)) * vr[k].get(gram, 0.0)
            if nh[k] != 0 and nr[k] != 0:
                val[k] /= nh[k] * nr[k]
            val[k] *= math.e ** (-(delta ** 2) / (2 * sigma ** 2))
        return val

    out = np.empty(len(cands))
    for i, (c, rs) in enumerate(zip(cands, refs)):
        vh, nh, lh = vec(ngrams(c, n))
        score = np.zeros(n)
        for r in rs:
            vr, nr, lr = vec(ngrams(r, n))
            score += sim(vh, vr, nh, nr, lh, lr)
        out[i] = np.mean(score) / len(rs) * 10.0
    return out


# -- the batch -------------------------------------------------------------------------------------------
def perturbed_samples(docs, images, n_samples, vocab, rng) -> list[np.ndarray]:
    """``n_samples`` per image: one of its references with ~40% of the words replaced at random."""
    out = []
    for i in images:
        for _ in range(n_samples):
            r = docs[i][rng.integers(len(docs[i]))].copy()
            words = r[:-1]
            swap = rng.random(words.size) < 0.4
            words[swap] = rng.integers(4, vocab, int(swap.sum()))
            out.append(r)
    return out


def pair_tensors(docs, images):
    """The loop's (image, caption) pairs for these images: ``<bos> … <eos> pad`` rows and image indices."""
    rows = [(k, r) for k, i in enumerate(images) for r in docs[i]]
    width = max(len(r) for _, r in rows) + 1
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    for j, (_, r) in enumerate(rows):
        tokens[j, 0] = BOS
        tokens[j, 1: len(r) + 1] = torch.from_numpy(r)
    return tokens, torch.tensor([k for k, _ in rows])


class IdTokenizer:
    """Just the special ids and the vocabulary size, which the objective and the model's loss read."""

    pad_id, bos_id, eos_id, unk_id = PAD, BOS, EOS, UNK
    words = None

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size


def step_models(decoder: str, vocab: int, embed: int, hidden: int, channels: int, mean_len: float):
    """A CaptionModel of ``decoder`` (a stand-in encoder: features are given) whose samples end after
    about ``mean_len`` tokens."""
    import zoo
    from zoo.models.caption_model import CaptionModel

    torch.manual_seed(0)
    dec = zoo.create_decoder(decoder, vocab, channels, embed_size=embed, hidden_size=hidden, dropout=0.0)
    out = [m for m in dec.modules() if isinstance(m, torch.nn.Linear) and m.out_features == vocab][-1]
    with torch.no_grad():  # p(<eos>) ≈ 1/mean_len at every step of an untrained model
        out.weight.mul_(0.1)
        out.bias.zero_()
        out.bias[EOS] = math.log((vocab - 1) / (mean_len - 1))
    return CaptionModel(torch.nn.Identity(), dec, IdTokenizer(vocab), {})


def scst_objective(model, pair_tokens, pair_images, sample_n: int, seed: int = 0, device: str | torch.device = "cpu"):
    from zoo.training.objective import ObjectiveContext, create_objective

    class Cfg:
        label_smoothing = 0.0

    Cfg.seed = seed
    obj = create_objective("scst", {"sample_n": sample_n, "max_len": MAX_WORDS})
    obj.setup(ObjectiveContext(None, model.tokenizer, pair_tokens, pair_images, Cfg, torch.device(device)))
    return obj


def scst_images_per_s(decoder: str, vocab: int, channels: int, grid: int, batch: int, steps: int,
                      device: torch.device, amp: bool, embed: int = 512, hidden: int = 512) -> float:
    """SCST training images/s of ``decoder`` from given features (``bench_gpu.py``): 5 samples per image
    against 5 random references per image, the full objective step + backward + AdamW step."""
    from zoo.training.objective import ObjectiveBatch

    g = torch.Generator().manual_seed(0)
    model = step_models(decoder, vocab, embed, hidden, channels, 11.0).to(device)
    lens = torch.randint(6, MAX_WORDS + 1, (batch * 5,), generator=g)
    pairs = torch.zeros(batch * 5, MAX_WORDS + 2, dtype=torch.long)
    pairs[:, 0] = BOS
    for j, n in enumerate(lens.tolist()):
        pairs[j, 1: n + 1] = torch.randint(4, vocab, (n,), generator=g)
        pairs[j, n + 1] = EOS
    obj = scst_objective(model, pairs, torch.arange(batch).repeat_interleave(5), 5, device=device)
    import zoo

    feats = zoo.Features(torch.randn(batch, grid, channels, device=device), torch.randn(batch, channels, device=device))
    batch_rows = ObjectiveBatch(feats, pairs[:batch].to(device), torch.arange(batch), 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for i in range(steps + 2):
        if i == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        model.train()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = obj.step(model, model, batch_rows)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def timed(fn, repeats: int) -> list[float]:
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        fn()
        if i:
            times.append(time.perf_counter() - t0)
    return times


def convention_gap(vocab: int, rng: np.random.Generator) -> dict:
    """(c): the rewards of the ``zoo`` and ``ruotianluo`` reference conventions on the same samples."""
    from zoo.training.reward import CiderReward

    per_image, ids = coco_words(vocab)
    full = [[np.array([ids.get(w, UNK) for w in c]) for c in caps] for caps in per_image.values()]

    def rows(cut: int | None) -> torch.Tensor:
        seqs = [[BOS, *(c[:cut] if cut else c), EOS] for caps in full for c in caps]
        out = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)
        for i, q in enumerate(seqs):
            out[i, :len(q)] = torch.tensor(q)
        return out

    images = torch.tensor([i for i, caps in enumerate(full) for _ in caps])
    cut = rows(MAX_WORDS)
    kw = dict(pad_id=PAD, eos_id=EOS, vocab_size=vocab)
    ours = CiderReward.from_pairs(cut, images, **kw)
    theirs = CiderReward.from_pairs(cut, images, **kw, convention="ruotianluo", full_tokens=rows(None), max_len=MAX_WORDS)
    docs = [[np.array([*c[:MAX_WORDS], EOS]) for c in caps] for caps in full]
    picked = rng.choice(len(docs), 2000, replace=False)
    samples = perturbed_samples(docs, picked, 5, vocab, rng)
    row_images = np.repeat(picked, 5)
    cand, lens = np.concatenate(samples), np.array([len(x) for x in samples])
    a, b = ours(cand, lens, row_images), theirs(cand, lens, row_images)
    d = np.abs(a - b)
    long = np.array([any(len(c) >= MAX_WORDS for c in full[i]) for i in row_images])
    figures = {"captions": int(sum(map(len, full))), "share_16_words_or_more":
               round(float(np.mean([len(c) >= MAX_WORDS for caps in full for c in caps])), 4),
               "samples": int(len(samples)), "mean_reward_zoo": round(float(a.mean()), 4),
               "mean_reward_ruotianluo": round(float(b.mean()), 4), "mean_abs_diff": round(float(d.mean()), 4),
               "max_abs_diff": round(float(d.max()), 4), "mean_abs_diff_cut_images": round(float(d[long].mean()), 4),
               "max_abs_diff_cut_images": round(float(d[long].max()), 4),
               "max_abs_diff_other_images": round(float(d[~long].max()), 4)}
    print(f"(c) reference conventions: mean reward zoo {a.mean():.4f}, ruotianluo {b.mean():.4f}; |difference| "
          f"mean {d.mean():.4f}, max {d.max():.4f}; images with a caption of >= {MAX_WORDS} words: mean "
          f"{d[long].mean():.4f}, max {d[long].max():.4f}; other images: max {d[~long].max():.4f}")
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller decoders: a smoke run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--conventions", action="store_true", help="only (c): the reward gap between reference conventions")
    args = ap.parse_args()
    if not CAPTIONS.is_file():
        sys.exit(f"bench_scst.py needs the COCO val2014 captions at {CAPTIONS} (../shared/data)")
    if args.conventions:
        import zoo  # noqa: F401  (plugins)

        report("bench_scst-conventions", convention_gap(10_000, np.random.default_rng(0)))
        return
    torch.set_num_threads(args.threads)
    import zoo  # noqa: F401  (plugins)
    from zoo.training.objective import ObjectiveBatch
    from zoo.training.reward import CiderReward

    V, IMAGES, N = 10_000, 50, 5
    repeats = 2 if args.quick else 9
    rng = np.random.default_rng(0)
    docs, lengths = coco_corpus(V)
    print(f"{len(docs)} val2014 images as the training corpus; {lengths.size} captions, mean {lengths.mean():.1f} words")

    # (a) the reward step
    flat = np.concatenate([r for refs in docs for r in refs])
    ours_reward = CiderReward(flat, np.array([len(r) for refs in docs for r in refs]),
                              np.array([len(refs) for refs in docs]), V)
    ref_df = reference_df(docs)
    images = rng.choice(len(docs), IMAGES, replace=False)
    samples = perturbed_samples(docs, images, N, V, rng)
    row_images = np.repeat(images, N)
    cand_ids = np.concatenate(samples)
    cand_len = np.array([len(s) for s in samples])
    cands = [tuple(s.tolist()) for s in samples]
    refs = [[tuple(r.tolist()) for r in docs[i]] for i in row_images]
    got = ours_reward(cand_ids, cand_len, row_images)
    want = reference_cider(cands, refs, ref_df, len(docs))
    diff = float(np.abs(got - want).max())
    t_ours, t_ref = [], []
    for _ in range(repeats):  # alternate, so that a burst of load on the shared machine hits both
        t_ours += timed(lambda: ours_reward(cand_ids, cand_len, row_images), 3)
        t_ref += timed(lambda: reference_cider(cands, refs, ref_df, len(docs)), 1)
    ratio_a = min(t_ref) / min(t_ours)
    print(f"(a) reward of {len(samples)} samples: ours {min(t_ours) * 1e3:.2f} ms, per-caption dict "
          f"{min(t_ref) * 1e3:.1f} ms: {ratio_a:.1f}x; max |difference| {diff:.1e}; mean reward {got.mean():.3f}")

    # (b) an SCST step vs an XE step on the same images
    embed, hidden, channels = (128, 256, 256) if args.quick else (256, 512, 512)
    feats_all = zoo.Features(torch.randn(IMAGES, 49, channels), torch.randn(IMAGES, channels))
    pair_tokens, pair_images = pair_tensors(docs, images)
    step_figures = {}
    for decoder in ("gru", "gru-attn"):
        model = step_models(decoder, V, embed, hidden, channels, float(lengths.clip(max=MAX_WORDS).mean() + 1))
        obj = scst_objective(model, pair_tokens, pair_images, N)
        rows_feats = feats_all.index_select(pair_images)  # the XE batch: each image once per reference
        width = int((pair_tokens != PAD).sum(1).max())
        caps = pair_tokens[:, :width]
        batch = ObjectiveBatch(feats_all, caps[:IMAGES], torch.arange(IMAGES), 0)

        def xe_step():
            model.zero_grad(set_to_none=True)
            model.train()
            model.loss(rows_feats, caps).backward()

        lens = []

        def scst_step():
            model.zero_grad(set_to_none=True)
            model.train()
            out = obj.step(model, model, batch)
            out.loss.backward()
            lens.append(out.logs["sample_len"])

        t_xe, t_scst = [], []
        for _ in range(repeats + 1):  # alternate, first round a warm-up
            t_xe.append(timed(xe_step, 0 + 1)[0])
            t_scst.append(timed(scst_step, 0 + 1)[0])
        t_xe, t_scst = t_xe[1:], t_scst[1:]
        ratio = min(t_scst) / min(t_xe)
        step_figures[decoder] = {"xe_step_s": round(min(t_xe), 4), "scst_step_s": round(min(t_scst), 4),
                                 "xe_median_s": round(statistics.median(t_xe), 4),
                                 "scst_median_s": round(statistics.median(t_scst), 4),
                                 "scst_over_xe": round(ratio, 2), "meets_target_3x": ratio <= 3.0,
                                 "mean_sample_len": round(float(np.mean(lens)), 2),
                                 "xe_rows": int(caps.shape[0]), "scst_rows": IMAGES * N}
        print(f"(b) {decoder:<8} XE step {min(t_xe):.3f} s ({caps.shape[0]} captions), SCST step {min(t_scst):.3f} s "
              f"({IMAGES}x{N} samples, mean length {np.mean(lens):.1f}): {ratio:.2f}x")

    figures = {
        "images": IMAGES, "samples_per_image": N, "vocab": V, "df_documents": len(docs), "threads": args.threads,
        "reward_ours_ms": round(min(t_ours) * 1e3, 3), "reward_reference_ms": round(min(t_ref) * 1e3, 2),
        "reward_ratio": round(ratio_a, 1), "reward_meets_target_20x": ratio_a >= 20,
        "reward_max_abs_diff": diff, "rewards_match_1e-9": diff <= 1e-9,
        "step": step_figures, "quick": args.quick,
    }
    report("bench_scst-quick" if args.quick else "bench_scst", figures)


if __name__ == "__main__":
    main()
