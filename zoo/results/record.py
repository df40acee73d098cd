"""An evaluation turned into a results-database row: the model's full config and its hash, parameters,
scores, per-image CIDEr-D, captions, decoding, environment, the run and checkpoint it came from, and the
references and thumbnails the leaderboard page drills down to."""

from __future__ import annotations

from pathlib import Path

from zoo.errors import ResultsDBError
from zoo.evaluation.model_eval import ModelEvaluation
from zoo.files import sha256_file
from zoo.models.caption_model import CaptionModel
from zoo.models.checkpoint import objective_signature, read_extra
from zoo.results.database import ResultsDB
from zoo.results.evalrecord import EvalRecord
from zoo.results.provenance import (
    config_hash,
    environment_info,
    full_config,
    references_hash,
    run_identity,
)


def record(ev: ModelEvaluation, model: CaptionModel, db_path: str | Path | None, *, checkpoint: str | Path | None = None,
           seed: int | None = None, run_name: str | None = None,
           train_images_per_s: float | None = None, objective: str | None = None) -> int:
    """Add one row for this evaluation to the results database; returns its id. ``objective``: the
    training objective's signature (default: read from the checkpoint's ``extra``; ``xe`` without one)."""

    cfg = full_config(model.config)  # the options stored are the ones hashed: given ones plus defaults
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
        config_hash=config_hash(model.config),
        params_encoder=params["encoder"],
        params_decoder=params["decoder"],
        data=ev.data,
        split=ev.split,
        num_images=ev.num_images,
        references_hash=references_hash(ev.references),
        decoding=ev.decoding,
        metrics=ev.metrics,
        per_image_cider=ev.per_image_cider,
        captions={str(k): v for k, v in ev.captions.items()},
        train_images_per_s=train_images_per_s,
        decode_images_per_s=ev.decode_images_per_s,
        device=env.get("device", "cpu"),
        versions=env.get("versions", {}),
        git_commit=env.get("git_commit"),
        seed=seed,
        checkpoint_path=str(checkpoint) if checkpoint else None,
        checkpoint_sha256=sha256_file(checkpoint) if checkpoint else None,
        run_name=run_name,
        objective=objective or (objective_signature(read_extra(checkpoint)) if checkpoint else "xe"),
        extra={**(run_identity(checkpoint) if checkpoint else {}),
               **({"caption_stats": ev.caption_stats} if ev.caption_stats else {})},
    )
    db = ResultsDB(db_path)
    try:
        ev.record_id = db.record(rec)
        # the references and thumbnails of this reference set, for the leaderboard page's drill-down: the
        # row is committed already, so a failure here (a full disk) is noted on ``ev``, not raised as if
        # nothing had been recorded
        references = {str(k): v for k, v in ev.references.items()}
        try:
            db.record_images(rec.references_hash, references, ev.thumbnails)
        except ResultsDBError as exc:
            try:  # the thumbnails are most of the bytes: the reference captions alone may still fit
                if not ev.thumbnails:
                    raise
                db.record_images(rec.references_hash, references, {})
                ev.not_written[f"the {len(ev.thumbnails)} thumbnail(s) of row {ev.record_id} (the leaderboard "
                               f"page's drill-down shows its captions and references without pictures)"] = str(exc)
            except ResultsDBError:
                ev.not_written[f"the reference captions and {len(ev.thumbnails)} thumbnail(s) of row "
                               f"{ev.record_id} (the leaderboard page's drill-down)"] = str(exc)
    finally:
        db.close()
    return ev.record_id
