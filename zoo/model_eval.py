"""Evaluate a model on a data set split: decode every image, score with the official protocol, write the
COCO-format results file and a metrics JSON, and record a row in the results database.

Decoding streams batches through DataLoader workers, so memory stays flat however many images there are.
Under ``torchrun`` each rank decodes its share of the images; the captions are gathered and scored once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zoo import distributed as dist
from zoo.checkpoint import atomic_write
from zoo.model import CaptionModel

DEFAULT_METRICS = ("bleu", "meteor", "rouge-l", "cider-d", "spice")


@dataclass
class ModelEvaluation:
    metrics: dict[str, float]  # 0-1 scale
    per_image_cider: dict[str, float]
    not_computed: dict[str, str]
    captions: dict[Any, str]  # image id → caption
    references: dict[Any, list[str]]  # image id → the raw reference captions scored against
    decoding: dict[str, Any]
    data: str
    split: str
    num_images: int
    decode_images_per_s: float
    notes: list[str] = field(default_factory=list)
    scoring: Any = None  # the zoo.evaluation.EvalResult (for format_scores)
    results_path: Path | None = None
    metrics_path: Path | None = None
    record_id: int | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "split": self.split,
            "num_images": self.num_images,
            "decoding": self.decoding,
            "metrics": self.metrics,
            "scale": "0-1 (papers print x100)",
            "not_computed": self.not_computed,
            "decode_images_per_s": self.decode_images_per_s,
            "notes": self.notes,
        }


def evaluate_model(
    model: CaptionModel,
    dataset: Any,
    *,
    beam_size: int = 3,
    max_len: int = 20,
    length_penalty: float = 1.0,
    batch_size: int = 64,
    num_workers: int = 0,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    out_dir: str | Path | None = None,
    skip_bad_images: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
    max_images: int | None = None,
) -> ModelEvaluation | None:
    """Decode and score ``dataset``; returns None on ranks other than 0 under ``torchrun``."""
    from zoo.evaluation import evaluate_captions
    from zoo.train import generate_for_items, resolve_device

    dev = torch.device(device) if device is not None else resolve_device("auto")
    model.to(dev).eval()
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    mine = dist.shard(list(range(n)))
    t0 = time.perf_counter()
    caps = generate_for_items(
        model, dataset, mine, beam_size, max_len, dev, batch_size=batch_size, num_workers=num_workers,
        length_penalty=length_penalty, skip_bad_images=skip_bad_images, progress=progress and dist.rank() == 0,
    )
    elapsed = time.perf_counter() - t0
    gathered = dist.all_gather_object(caps)
    if dist.rank() != 0:
        return None
    by_index: dict[int, str] = {}
    for part in gathered:
        by_index.update(part)
    speed = n / elapsed if elapsed > 0 else 0.0
    own_notes = []
    skipped = n - len(by_index)
    if skipped:
        own_notes.append(f"{skipped} bad images skipped (--skip-bad-images)")
    res = {dataset[i].image_id: c for i, c in sorted(by_index.items())}
    gts = {dataset[i].image_id: list(dataset[i].captions) for i in sorted(by_index)}
    result = evaluate_captions(gts, res, metrics=metrics)
    notes = list(result.notes) + own_notes  # the scorer's notes first, then ours
    ev = ModelEvaluation(
        metrics=dict(result.scores),
        per_image_cider={str(k): float(v) for k, v in result.per_image_cider.items()},
        not_computed=dict(result.not_computed),
        captions=res,
        references=gts,
        decoding={"beam_size": beam_size, "max_len": max_len, "length_penalty": length_penalty},
        data=dataset.name,
        split=dataset.split,
        num_images=len(res),
        decode_images_per_s=speed,
        notes=notes,
        scoring=result,
    )
    if out_dir is not None:
        write_outputs(ev, Path(out_dir))
    return ev


def write_outputs(ev: ModelEvaluation, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{ev.data}_{ev.split}_beam{ev.decoding['beam_size']}"
    results = [{"image_id": k, "caption": v} for k, v in ev.captions.items()]
    ev.results_path = out / f"results_{tag}.json"
    ev.metrics_path = out / f"metrics_{tag}.json"
    atomic_write(ev.results_path, lambda tmp: Path(tmp).write_text(json.dumps(results)))
    atomic_write(ev.metrics_path, lambda tmp: Path(tmp).write_text(json.dumps(ev.summary(), indent=1)))


def record(ev: ModelEvaluation, model: CaptionModel, db_path: str | Path | None, *, checkpoint: str | Path | None = None,
           seed: int | None = None, run_name: str | None = None,
           train_images_per_s: float | None = None) -> int:
    """Add one row for this evaluation to the results database; returns its id."""
    from zoo.checkpoint import sha256_file
    from zoo.results import EvalRecord, ResultsDB, config_hash, environment_info, references_hash

    cfg = model.config
    params = model.num_parameters()
    env = environment_info()
    rec = EvalRecord(
        system=f"{cfg['encoder']['name']}+{cfg['decoder']['name']}+{cfg['tokenizer']['name']}",
        encoder=cfg["encoder"]["name"],
        decoder=cfg["decoder"]["name"],
        tokenizer=cfg["tokenizer"]["name"],
        encoder_options=cfg["encoder"].get("kwargs", {}),
        decoder_options=cfg["decoder"].get("kwargs", {}),
        tokenizer_options=cfg["tokenizer"].get("kwargs", {}),
        config_hash=config_hash(cfg),
        params_encoder=params["encoder"],
        params_decoder=params["decoder"],
        data=ev.data,
        split=ev.split,
        num_images=ev.num_images,
        references_hash=references_hash(ev.references),
        decoding=ev.decoding,
        metrics=ev.metrics,
        per_image_cider=ev.per_image_cider,
        train_images_per_s=train_images_per_s,
        decode_images_per_s=ev.decode_images_per_s,
        device=env.get("device", "cpu"),
        versions=env.get("versions", {}),
        git_commit=env.get("git_commit"),
        seed=seed,
        checkpoint_path=str(checkpoint) if checkpoint else None,
        checkpoint_sha256=sha256_file(checkpoint) if checkpoint else None,
        run_name=run_name,
    )
    db = ResultsDB(db_path)
    try:
        ev.record_id = db.record(rec)
    finally:
        db.close()
    return ev.record_id
