"""Small, real inputs for the page tests: shapes images, and a results database whose rows carry real
captions, per-image CIDEr-D (scored without Java) and thumbnails, as ``zoo eval`` would record them."""

from __future__ import annotations

import zlib
from pathlib import Path

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
