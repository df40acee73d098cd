"""What CIDEr optimisation is known to distort, measured on a set of generated captions.

Self-critical training raises CIDEr-D, and with it habits the metric does not punish: captions that end
on "a", "with", "the" (``zoo.generation.constraints.BAD_ENDING_WORDS``), captions of one stock length, a small
vocabulary used over and over, and training captions repeated word for word. ``caption_statistics``
reports each, so an evaluation shows them next to its scores. They are descriptive statistics, recorded
as such (the results row's ``extra``), never as metrics to rank by.

Captions are compared after the same light normalisation as training validation (lower case,
punctuation stripped: ``zoo.evaluation.captioning.simple_tokenize``), so "A dog." copies "a dog".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from zoo.data.datasets import read_json
from zoo.errors import DataError
from zoo.files import missing_reason
from zoo.evaluation.captioning import simple_tokenize
from zoo.generation.constraints import ends_badly


def caption_statistics(captions: Iterable[str], train_captions: Iterable[str] | None = None) -> dict[str, Any]:
    """``bad_ending_share`` (captions whose last word is a bad ending), ``mean_length`` (words),
    ``vocabulary`` (distinct words over all captions), ``captions`` (how many) and, when the training
    captions are given, ``copied_share`` (captions equal to a training caption after normalisation).
    Shares are fractions (0–1)."""
    caps = list(captions)
    norm = [simple_tokenize(c) for c in caps]
    n = len(caps)
    words = [c.split() for c in norm]
    out: dict[str, Any] = {
        "captions": n,
        "bad_ending_share": sum(ends_badly(c) for c in caps) / n if n else 0.0,
        "mean_length": sum(len(w) for w in words) / n if n else 0.0,
        "vocabulary": len({w for ws in words for w in ws}),
    }
    if train_captions is not None:
        seen = {simple_tokenize(c) for c in train_captions}
        out["copied_share"] = sum(c in seen for c in norm) / n if n else 0.0
    return out


def format_statistics(stats: dict[str, Any]) -> str:
    """One line for the printed summary."""
    text = (
        f"caption statistics (not metrics): bad endings {stats['bad_ending_share']:.1%}, mean length "
        f"{stats['mean_length']:.1f} words, vocabulary {stats['vocabulary']} words"
    )
    if "copied_share" in stats:
        text += f", copies of training captions {stats['copied_share']:.1%}"
    else:
        text += ", copies of training captions not measured (no training captions: --train-captions FILE)"
    return text


def read_caption_file(path: str) -> list[str]:
    """Training captions from ``path``: a COCO captions JSON (``annotations[].caption``, gzip or not), a
    Karpathy-split JSON (``images[].sentences[].raw``), or plain text with one caption per line."""
    p = Path(path)
    problem = missing_reason(p)
    if problem is not None:
        raise DataError(f"training captions file {p} {problem} (--train-captions)")
    if not p.is_file():
        raise DataError(f"training captions file {p} is not a file (--train-captions)")
    if p.suffix in (".json", ".gz"):
        doc = read_json(p, "training captions file")
        if isinstance(doc, dict) and isinstance(doc.get("annotations"), list):
            return [str(a["caption"]) for a in doc["annotations"] if isinstance(a, dict) and "caption" in a]
        if isinstance(doc, dict) and isinstance(doc.get("images"), list):
            return [str(s.get("raw", "")) for im in doc["images"] for s in im.get("sentences", [])
                    if im.get("split", "train") in ("train", "restval")]
        raise DataError(
            f"training captions file {p}: a JSON file must be COCO captions (annotations[].caption) or a Karpathy "
            f"split (images[].sentences[].raw); or give plain text, one caption per line"
        )
    try:
        return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"training captions file {p} cannot be read as text: {exc}") from exc
