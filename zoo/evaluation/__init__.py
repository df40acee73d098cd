"""Evaluation: scoring captions and models.

- ``cider``: our exact, vectorised CIDEr-D (document frequencies, hashed n-gram tables, token-id scoring).
- ``coco``: the official COCO caption protocol (pycocoevalcap: PTB tokenizer, BLEU, METEOR, ROUGE-L,
  CIDEr-D, SPICE where its models exist).
- ``bootstrap``: paired bootstrap over per-image scores.
- ``captioning``: captions for a split's images (batched, bad images skipped) and the validation score
  training reports.
- ``caption_stats``: what CIDEr optimisation distorts (bad endings, length, vocabulary, copies).
- ``report``: the evaluation report ``report_*.html``.
- ``model_eval``: a model evaluated on a split: decode, score, statistics, report.

May import: ``zoo.models``, ``zoo.generation``, ``zoo.data``, ``zoo.views``, ``zoo.runtime``,
``zoo.registry``, ``zoo.contracts``, ``zoo.files``, ``zoo.errors``. Training imports this package (its
validation is an evaluation); this package never imports training.

The official protocol's names are re-exported here, where ``zoo.evaluation`` always had them.
"""

from zoo.evaluation.coco import (
    DEFAULT_METRICS,
    JAVA_INSTALL_HINT,
    PYCOCOEVALCAP_KEYS,
    SCALE_NOTE,
    EvalResult,
    check_metrics,
    evaluate_captions,
    format_scores,
    load_coco_annotations,
    load_coco_results,
    score_files,
    small_corpus_note,
)

__all__ = [
    "DEFAULT_METRICS",
    "EvalResult",
    "JAVA_INSTALL_HINT",
    "PYCOCOEVALCAP_KEYS",
    "SCALE_NOTE",
    "check_metrics",
    "evaluate_captions",
    "format_scores",
    "load_coco_annotations",
    "load_coco_results",
    "score_files",
    "small_corpus_note",
]
