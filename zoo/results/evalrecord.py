"""One evaluation as a results-database row (``EvalRecord``): what was scored, how, where and by whom, with
the checks that keep a misleading row out of the database (a ×100 metric, a non-finite score, per-image
tables that do not match the image count, values JSON cannot hold).

``zoo.results.record`` fills one in from an evaluation; ``zoo.results.database`` stores and reads them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from zoo.errors import ResultsDBError


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(kw_only=True)
class EvalRecord:
    """One evaluation of one model on one split with one decoding setting.

    Metrics are on pycocoevalcap's scale (0–1; CIDEr-D 0–10), never ×100: the leaderboard multiplies for
    display. ``per_image_cider`` maps image id (as a string) to that image's CIDEr-D; its mean is the
    corpus CIDEr-D, and it is what the paired bootstrap resamples. ``captions`` maps the same ids to the
    generated captions (empty on rows recorded before schema version 2). ``references_hash`` (see
    ``zoo.results.provenance.references_hash``) identifies the reference captions: only rows with equal data, split and
    references hash are ranked together. ``id`` is set on rows read back from the database.
    """

    system: str
    encoder: str
    decoder: str
    tokenizer: str
    config_hash: str
    data: str
    split: str
    references_hash: str
    metrics: dict[str, float]
    encoder_options: dict[str, Any] = field(default_factory=dict)
    decoder_options: dict[str, Any] = field(default_factory=dict)
    tokenizer_options: dict[str, Any] = field(default_factory=dict)
    params_encoder: int = 0
    params_decoder: int = 0
    num_images: int = 0
    decoding: dict[str, Any] = field(default_factory=dict)
    per_image_cider: dict[str, float] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    train_images_per_s: float | None = None
    decode_images_per_s: float | None = None
    device: str = ""
    versions: dict[str, Any] = field(default_factory=dict)
    git_commit: str | None = None
    seed: int | None = None
    created_at: str = field(default_factory=_now)
    checkpoint_path: str | None = None
    checkpoint_sha256: str | None = None
    run_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: how the model was trained: the objective's signature (``zoo.models.checkpoint.objective_signature``), e.g.
    #: ``scst(cider-d, baseline=mean, n=5, df=train, eos=yes)``; ``xe`` for cross-entropy
    objective: str = "xe"
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EvalRecord":
        """The inverse of ``to_dict`` (e.g. a row shared as JSON); unknown keys are refused by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ResultsDBError(f"evaluation record: unknown key {unknown[0]!r}; known keys are {sorted(known)}")
        try:
            return cls(**dict(d))
        except TypeError as exc:
            raise ResultsDBError(f"evaluation record: {exc}") from exc

    def validate(self) -> None:
        """Refuse a row that would mislead the leaderboard later: a ×100 metric, a non-finite score, a
        per-image table that does not match the image count, a value JSON cannot hold."""
        for name in ("system", "encoder", "decoder", "tokenizer", "config_hash", "data", "split", "references_hash",
                     "objective"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ResultsDBError(f"evaluation record: field {name!r} must be a non-empty string, got {value!r}")
        if not self.metrics:
            raise ResultsDBError(f"evaluation record {self.system!r}: 'metrics' is empty; record at least CIDEr-D")
        for key, value in self.metrics.items():
            _check_finite(f"metrics[{key!r}]", value, self.system)
            limit = 10.0 if key.lower().startswith("cider") else 1.0
            if value > limit + 1e-9 or value < 0:
                raise ResultsDBError(
                    f"evaluation record {self.system!r}: metrics[{key!r}] = {value} is outside pycocoevalcap's "
                    f"0–{limit:g} scale. Record raw scores (e.g. 0.352), not ×100 (35.2)."
                )
        for key, value in self.per_image_cider.items():
            if not isinstance(key, str):
                raise ResultsDBError(
                    f"evaluation record {self.system!r}: per_image_cider keys must be image ids as strings, "
                    f"got {key!r} ({type(key).__name__}); use str(image_id)"
                )
            _check_finite(f"per_image_cider[{key!r}]", value, self.system)
        for key, value in self.captions.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ResultsDBError(
                    f"evaluation record {self.system!r}: captions must map image ids (strings) to captions "
                    f"(strings), got {key!r}: {value!r}; use str(image_id)"
                )
        if self.captions and len(self.captions) != self.num_images:
            raise ResultsDBError(
                f"evaluation record {self.system!r}: captions has {len(self.captions)} entries but num_images "
                f"is {self.num_images}; they must describe the same images"
            )
        if self.per_image_cider and len(self.per_image_cider) != self.num_images:
            raise ResultsDBError(
                f"evaluation record {self.system!r}: per_image_cider has {len(self.per_image_cider)} scores "
                f"but num_images is {self.num_images}; they must describe the same images"
            )
        for name in ("train_images_per_s", "decode_images_per_s"):
            value = getattr(self, name)
            if value is not None:
                _check_finite(name, value, self.system)
        for name in ("encoder_options", "decoder_options", "tokenizer_options", "decoding", "versions", "extra"):
            canonical_json(getattr(self, name), f"evaluation record {self.system!r}: field {name!r}")


def _check_finite(what: str, value: Any, system: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ResultsDBError(f"evaluation record {system!r}: {what} must be a finite number, got {value!r}")


def canonical_json(value: Any, what: str) -> str:
    """Canonical JSON (sorted keys), so equal settings compare equal as text."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ResultsDBError(f"{what} cannot be stored as JSON: {exc}") from exc
