"""An evaluation turned into a results-database row: the model's full config and its hash, parameters,
scores, per-image CIDEr-D, captions, decoding, environment, the run and checkpoint it came from, and the
references and thumbnails the leaderboard page drills down to."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
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
    pending = build_record(ev, model, checkpoint=checkpoint, seed=seed, run_name=run_name,
                           train_images_per_s=train_images_per_s, objective=objective)
    ev.record_id = store(pending, db_path, not_written=ev.not_written)
    return ev.record_id


@dataclass
class PendingRecord:
    """A row not yet in the database, with the references and thumbnails stored beside it. A sweep's job
    writes it into its run folder as JSON (:meth:`to_json`); the driver, the database's one writer, stores it."""

    row: EvalRecord
    references: dict[str, list[str]]
    thumbnails: dict[str, bytes]

    def to_json(self) -> str:
        return json.dumps({"row": self.row.to_dict(), "references": self.references,
                           "thumbnails": {k: base64.b64encode(v).decode() for k, v in self.thumbnails.items()}})

    @classmethod
    def from_json(cls, text: str) -> "PendingRecord":
        data = json.loads(text)
        return cls(EvalRecord.from_dict(data["row"]), data["references"],
                   {k: base64.b64decode(v) for k, v in data["thumbnails"].items()})


def build_record(ev: ModelEvaluation, model: CaptionModel, *, checkpoint: str | Path | None = None,
                 seed: int | None = None, run_name: str | None = None,
                 train_images_per_s: float | None = None, objective: str | None = None) -> PendingRecord:
    """The row :func:`record` stores for this evaluation, without storing it."""
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
    refs = {str(k): v for k, v in ev.references.items()}
    return PendingRecord(rec, refs, dict(ev.thumbnails))


def store(pending: PendingRecord, db_path: str | Path | None, *, once: bool = False,
          not_written: dict[str, str] | None = None) -> int:
    """Store ``pending`` (its row, and the references and thumbnails of its reference set for the leaderboard
    page's drill-down); returns the row's id. ``once``: when the database already holds this very row (same
    run, checkpoint, split, references and decoding: a driver that stopped between storing it and noting
    that it did), return that row's id instead of adding it twice. ``not_written``: where to note what
    could not be stored once the row was (the drill-down's thumbnails on a full disk)."""
    rec = pending.row
    db = ResultsDB(db_path)
    try:
        if once:
            for old in db.rows(run_name=rec.run_name, data=rec.data, split=rec.split):
                if (old.checkpoint_path, old.checkpoint_sha256, old.references_hash, old.decoding, old.config_hash) == (
                        rec.checkpoint_path, rec.checkpoint_sha256, rec.references_hash, rec.decoding, rec.config_hash):
                    return int(old.id)  # type: ignore[arg-type]
        rid = db.record(rec)
        # the references and thumbnails of this reference set, for the leaderboard page's drill-down: the
        # row is committed already, so a failure here (a full disk) is noted in ``not_written``, not raised
        # as if nothing had been recorded
        thumbs = pending.thumbnails
        try:
            db.record_images(rec.references_hash, pending.references, thumbs)
        except ResultsDBError as exc:
            if not_written is None:
                not_written = {}
            try:  # the thumbnails are most of the bytes: the reference captions alone may still fit
                if not thumbs:
                    raise
                db.record_images(rec.references_hash, pending.references, {})
                not_written[f"the {len(thumbs)} thumbnail(s) of row {rid} (the leaderboard "
                            f"page's drill-down shows its captions and references without pictures)"] = str(exc)
            except ResultsDBError:
                not_written[f"the reference captions and {len(thumbs)} thumbnail(s) of row "
                            f"{rid} (the leaderboard page's drill-down)"] = str(exc)
    finally:
        db.close()
    return rid
