"""Small, real inputs for the page tests: shapes images, and a results database whose rows carry real
captions, per-image CIDEr-D (scored without Java) and thumbnails, as ``zoo eval`` would record them."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from zoo.data.datasets import load_dataset
from zoo.evaluation.coco import evaluate_captions
from zoo.evaluation.report import make_thumbnails
from zoo.results.database import ResultsDB
from zoo.results.evalrecord import EvalRecord
from zoo.results.provenance import config_hash, references_hash
from zoo.evaluation.captioning import simple_tokenize

# three systems of different quality: one copies a reference, one cuts it short, one says little
SYSTEMS = {
    "resnet10t+gru-attn+word": lambda refs: refs[0],
    "resnet10t+gru+word": lambda refs: " ".join(refs[1].split()[:4]),
    "resnet10t+lstm+word": lambda refs: "a shape <b>on</b> a background & more",  # markup must stay text
}


def shapes(n: int = 40):
    return load_dataset("shapes", split="test", num_train=4, num_val=2, num_test=n, image_size=64)


def record_systems(db_path: Path, n: int = 40, thumbnails: bool = True) -> Path:
    """A results database with the three SYSTEMS evaluated on ``n`` shapes test images."""
    data = shapes(n)
    gts = {item.image_id: list(item.captions) for item in data}
    with ResultsDB(db_path) as db:
        for name, make in SYSTEMS.items():
            res = {k: make(refs) for k, refs in gts.items()}
            scored = evaluate_captions(
                {k: [simple_tokenize(c) for c in v] for k, v in gts.items()},
                {k: simple_tokenize(c) for k, c in res.items()}, metrics=("cider-d",), tokenize=False,
            )
            encoder, decoder, tokenizer = name.split("+")
            db.record(EvalRecord(
                system=name, encoder=encoder, decoder=decoder, tokenizer=tokenizer,
                config_hash=config_hash({"system": name}), data="shapes", split="test",
                references_hash=references_hash(gts), metrics=dict(scored.scores), num_images=len(gts),
                decoding={"beam_size": 3, "max_len": 20, "length_penalty": 1.0},
                per_image_cider={str(k): float(v) for k, v in scored.per_image_cider.items()},
                captions={str(k): v for k, v in res.items()}, seed=0,
                params_encoder=4_900_000, params_decoder=1_000_000 + zlib.crc32(name.encode()) % 500_000,
                decode_images_per_s=200.0, train_images_per_s=1500.0,
            ))
        items = {str(item.image_id): item for item in data}
        thumbs = make_thumbnails(items, list(items)) if thumbnails else {}
        db.record_images(references_hash(gts), {str(k): v for k, v in gts.items()}, thumbs)
    return db_path


SCST = "scst(cider-d, baseline=mean, n=5, df=train, eos=yes)"
SCST_GREEDY = "scst(cider-d, baseline=greedy, n=5, df=train, eos=yes)"
_UPDOWN = {"hidden_size": 512, "attention_size": 512, "dropout": 0.5}
_GRU_ATTN = {"hidden_size": 512, "attention_size": 512, "dropout": 0.5}
_GRU = {"hidden_size": 512, "dropout": 0.5}

#: a crowded board as a plugin author's comparison leaves it: three SCST systems at 186–188 CIDEr-D with
#: nearly equal parameters and speeds, the same decoders trained with cross-entropy, an attention-size
#: variant and two beam sizes; (decoder, decoder options, objective, beam size, CIDEr-D, params M, img/s)
CROWDED = [
    ("updown", _UPDOWN, SCST, 3, 1.880, 12.1, 310.0),
    ("updown", _UPDOWN, SCST_GREEDY, 3, 1.872, 12.1, 306.0),
    ("gru-attn", {**_GRU_ATTN, "attention_size": 256}, SCST, 3, 1.864, 11.9, 318.0),
    ("updown", _UPDOWN, "xe", 3, 1.620, 12.1, 309.0),
    ("gru-attn", _GRU_ATTN, "xe", 3, 1.580, 12.3, 300.0),
    ("gru", _GRU, "xe", 3, 1.450, 9.6, 420.0),
    ("gru", _GRU, "xe", 1, 1.400, 9.6, 1100.0),
]


def crowded_rows(n: int = 200) -> list[EvalRecord]:
    """The CROWDED board's rows on ``n`` made-up images (per-image CIDEr-D with exactly the row's mean),
    every metric the official protocol records, and SCST signatures in the objective column."""
    ids = [str(i) for i in range(n)]
    refs = {k: [f"a picture number {k}", f"image {k} of a thing"] for k in ids}
    rows = []
    for i, (decoder, options, objective, beam, cider, params, speed) in enumerate(CROWDED):
        rng = np.random.default_rng(i)
        noise = rng.normal(0, 0.4, n)
        scores = np.clip(cider + noise - noise.mean(), 0, None)
        scores += cider - scores.mean()
        parts = {"encoder": {"name": "resnet10t", "pretrained": True, "img_size": 224},
                 "decoder": {"name": decoder, **options}, "tokenizer": {"name": "word", "min_count": 5}}
        rows.append(EvalRecord(
            system=f"resnet10t+{decoder}+word", encoder="resnet10t", decoder=decoder, tokenizer="word",
            encoder_options={"pretrained": True, "img_size": 224}, decoder_options=dict(options),
            tokenizer_options={"min_count": 5}, config_hash=config_hash(parts), data="coco-karpathy",
            split="test", references_hash=references_hash(refs), num_images=n,
            metrics={"CIDEr-D": cider, "BLEU-4": 0.30 + cider / 20, "METEOR": 0.25 + cider / 100,
                     "ROUGE-L": 0.52 + cider / 50, "SPICE": 0.19 + cider / 100},
            decoding={"beam_size": beam, "max_len": 20, "length_penalty": 1.0},
            per_image_cider={k: float(v) for k, v in zip(ids, scores)},
            captions={k: f"a caption of image {k} by {decoder}" for k in ids}, seed=0,
            params_encoder=4_900_000, params_decoder=int(params * 1e6) - 4_900_000,
            decode_images_per_s=speed, train_images_per_s=1500.0, objective=objective,
            checkpoint_sha256=f"{i:02d}" * 32,
            extra={"run_id": f"run{i // 2 if beam == 1 else i}",
                   "train_hash": f"{zlib.crc32(objective.encode()) ^ zlib.crc32(decoder.encode()):08x}" * 8},
        ))
    return rows
