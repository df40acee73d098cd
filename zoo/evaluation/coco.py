"""Caption evaluation that follows the official COCO protocol (pycocoevalcap's ``COCOEvalCap``) exactly,
and says so when it cannot.

COCOEvalCap: PTB-tokenise references and candidates (Stanford CoreNLP 3.4.1 in Java, lower-cased,
punctuation tokens removed), then run BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and SPICE on the tokens. Scores
are on pycocoevalcap's scale: 0-1, CIDEr-D 0-10; papers print them x100. Metrics come from the registry
(``metric`` plugins), so a third-party metric plugs in by name.

Differences from running pycocoevalcap by hand, all on purpose:

* CIDEr-D defaults to ``cider-d-fast`` (:class:`zoo.evaluation.cider.CiderD`), which reproduces pycocoevalcap's
  per-image numbers within 1e-9 (tests/test_cider.py) ~40x faster; ``reference_cider=True`` uses
  pycocoevalcap's own.
* SPICE needs CoreNLP jars that pycocoevalcap downloads at run time; offline it is reported in
  ``not_computed`` with the reason, never as a number.
* No Java: an error up front that names what needs it, instead of a crash halfway.
* Fewer than :data:`zoo.evaluation.cider.SMALL_CORPUS` images: a warning and a note (the command line prints only
  the note), because CIDEr-D takes its document frequencies from the evaluated references, so tiny sets
  score 0 or oddly.
* Results files: one caption per image. pycocoevalcap's ``loadRes`` keeps duplicates and its scorers then
  fail on ``assert len(hypo) == 1``; :func:`load_coco_results` refuses them up front, naming the image.
"""

from __future__ import annotations

import shutil
import textwrap
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from zoo.data.datasets import read_json
from zoo.errors import DataError, MetricError
from zoo.evaluation.cider import SMALL_CORPUS, SmallCorpusWarning
from zoo.registry.manager import get_registry
from zoo.registry.registry import normalise

__all__ = [
    "DEFAULT_METRICS",
    "EvalResult",
    "SCALE_NOTE",
    "check_metrics",
    "PYCOCOEVALCAP_KEYS",
    "evaluate_captions",
    "format_scores",
    "load_coco_annotations",
    "load_coco_results",
    "score_files",
    "small_corpus_note",
]

DEFAULT_METRICS: tuple[str, ...] = ("bleu", "meteor", "rouge-l", "cider-d", "spice")
#: our labels → the keys COCOEvalCap.eval uses
PYCOCOEVALCAP_KEYS = {
    "BLEU-1": "Bleu_1",
    "BLEU-2": "Bleu_2",
    "BLEU-3": "Bleu_3",
    "BLEU-4": "Bleu_4",
    "METEOR": "METEOR",
    "ROUGE-L": "ROUGE_L",
    "CIDEr-D": "CIDEr",
    "SPICE": "SPICE",
}
JAVA_INSTALL_HINT = (
    "Install Java 17 and put `java` on PATH: `apt-get install openjdk-17-jre-headless` (Debian/Ubuntu), "
    "`brew install openjdk@17` (macOS) or `conda install -c conda-forge openjdk=17`."
)
SCALE_NOTE = "pycocoevalcap scale: 0-1 (CIDEr-D 0-10); papers print x100"
# what the PTB lexer treats as a line break (\n itself pycocoevalcap already replaces)
_LINE_BREAKS = str.maketrans({c: " " for c in "\r\x0b\x0c\x85\u2028\u2029"})


@dataclass
class EvalResult:
    """Scores on pycocoevalcap's 0-1 scale (CIDEr-D 0-10), keyed 'BLEU-1'..'BLEU-4', 'METEOR', 'ROUGE-L',
    'CIDEr-D' and 'SPICE' (only when computed); ``per_image_cider`` for significance tests;
    ``not_computed`` says why a requested metric is missing."""

    scores: dict[str, float]
    per_image_cider: dict[Any, float]
    not_computed: dict[str, str]
    num_images: int
    tokenized: bool
    cider: str = "cider-d-fast"
    notes: list[str] = field(default_factory=list)
    bleu_counts: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: scores on the 0-1 scale, image ids as strings."""
        out = asdict(self)
        out["per_image_cider"] = {str(k): v for k, v in self.per_image_cider.items()}
        out["scale"] = SCALE_NOTE
        return out


# -- Java ---------------------------------------------------------------------------------------------------


def _java_missing_error(metrics: Sequence[str], tokenize: bool) -> MetricError:
    """No ``java`` on PATH while the PTB tokenizer is wanted: say what cannot run and what to do."""
    java_metrics = [m for m in ("METEOR", "SPICE") if m in metrics]
    java_too = ""
    if java_metrics:
        verb = "are Java programs" if len(java_metrics) > 1 else "is a Java program"
        java_too = f", and {' and '.join(java_metrics)} {verb} too"
    requested = ", ".join(metrics) if metrics else "the requested metrics"
    return MetricError(
        f"Java was not found on PATH, so none of {requested} can be computed here: the official COCO protocol "
        f"tokenises every caption with the PTB tokenizer (Stanford CoreNLP, a Java program) before scoring"
        f"{java_too}. {JAVA_INSTALL_HINT} Without Java, `--no-ptb` (on `zoo eval` and `zoo score`; "
        "tokenize=False in Python) scores BLEU, ROUGE-L and CIDEr-D on captions tokenised without the PTB "
        "tokenizer (METEOR and SPICE are then not computed); that is NOT the official protocol, so those "
        "scores are not comparable with published ones."
    )


# -- tokenisation -------------------------------------------------------------------------------------------


def ptb_tokenize(captions: Mapping[Any, Sequence[str]]) -> dict[Any, list[str]]:
    """pycocoevalcap's PTBTokenizer on ``{id: [caption, ...]}``. Line breaks inside a caption become
    spaces first: pycocoevalcap would otherwise split that caption over two lines and silently shift every
    later caption onto the wrong image."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer  # lazy: only PTB tokenisation uses pycocoevalcap

    payload = {k: [{"caption": c.translate(_LINE_BREAKS)} for c in caps] for k, caps in captions.items()}
    try:
        out = PTBTokenizer().tokenize(payload)
    except OSError as exc:
        raise MetricError(
            f"the PTB tokenizer could not run ({exc}); it writes a temporary file next to pycocoevalcap's "
            "tokenizer jar, so that folder must be writable"
        ) from exc
    for k, caps in captions.items():
        got = out.get(k)
        if got is None or len(got) != len(caps):
            raise MetricError(f"the PTB tokenizer returned {0 if got is None else len(got)} caption(s) for image {k!r}, expected {len(caps)}")
    return out


# -- evaluation ---------------------------------------------------------------------------------------------


def _check_pairs(gts: Mapping[Any, Sequence[str]], res: Mapping[Any, Any]) -> dict[Any, str]:
    """``res`` as {id: caption}; every id in both, references non-empty, captions strings."""
    extra = next((k for k in res if k not in gts), None)
    if extra is not None:
        raise DataError(f"image {extra!r} has a caption to score but no references")
    lacking = next((k for k in gts if k not in res), None)
    if lacking is not None:
        raise DataError(f"image {lacking!r} has references but no caption to score")
    if not gts:
        raise DataError("nothing to evaluate: no images")
    out: dict[Any, str] = {}
    for k in gts:
        cap = res[k]
        if isinstance(cap, (list, tuple)):
            if len(cap) != 1:
                raise DataError(f"image {k!r}: expected one caption to score, got {len(cap)}")
            cap = cap[0]
        if not isinstance(cap, str):
            raise DataError(f"image {k!r}: the caption must be a string, got {type(cap).__name__}")
        refs = gts[k]
        if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise DataError(f"image {k!r}: references must be a non-empty list of strings")
        out[k] = cap
    return out


def _scorer_names(metrics: Sequence[str], reference_cider: bool) -> list[str]:
    names = []
    for m in metrics:
        name = normalise(m)
        if name == "cider-d" and not reference_cider:
            name = "cider-d-fast"
        if name not in names:
            names.append(name)
    return names


def evaluate_captions(
    gts: Mapping[Any, Sequence[str]],
    res: Mapping[Any, str],
    metrics: Sequence[str] = DEFAULT_METRICS,
    tokenize: bool = True,
    reference_cider: bool = False,
    subset_of: int | None = None,
) -> EvalResult:
    """Score ``res`` ({image_id: caption}) against ``gts`` ({image_id: [reference, ...]}) as COCOEvalCap
    does. ``tokenize=False`` skips the PTB tokenizer (captions must already be tokenised: not the official
    protocol unless they came out of it). SPICE that cannot run is reported in ``not_computed``; missing
    Java for the tokenizer raises :class:`MetricError`. ``subset_of``: how many images the set these were
    taken from has, when they are only part of it (a ``--max-images`` run); it only changes the advice of
    the small-corpus note (a :class:`SmallCorpusWarning` too, below :data:`SMALL_CORPUS` images)."""
    cands = _check_pairs(gts, res)
    ready, not_computed = check_metrics(metrics, tokenize=tokenize, reference_cider=reference_cider)

    notes: list[str] = []
    if len(cands) < SMALL_CORPUS:
        msg = small_corpus_note(len(cands), subset_of)
        warnings.warn(SmallCorpusWarning(msg), stacklevel=2)
        notes.append(msg)

    if tokenize:
        gts_t = ptb_tokenize(gts)
        res_t = ptb_tokenize({k: [c] for k, c in cands.items()})
    else:
        gts_t = {k: list(gts[k]) for k in cands}
        res_t = {k: [c] for k, c in cands.items()}
    result = EvalResult(
        scores={},
        per_image_cider={},
        not_computed=not_computed,
        num_images=len(cands),
        tokenized=tokenize,
        cider="cider-d" if reference_cider else "cider-d-fast",
        notes=notes,
    )
    for scorer in ready:
        _run(scorer, gts_t, res_t, result)
    order = {k: i for i, k in enumerate(PYCOCOEVALCAP_KEYS)}
    result.scores = dict(sorted(result.scores.items(), key=lambda kv: order.get(kv[0], len(order))))
    return result


def small_corpus_note(n: int, subset_of: int | None = None) -> str:
    """Why CIDEr-D on ``n`` (< :data:`SMALL_CORPUS`) images is unreliable, and what to do: score the whole
    split when these are only part of it (``subset_of`` images), else compare on a larger split."""
    msg = (
        f"only {n} image{'s' if n != 1 else ''} scored: CIDEr-D takes its document frequencies from the "
        "references being scored, so a set this small scores low or oddly (a single image always scores 0)"
    )
    if subset_of is not None and subset_of > n:
        return msg + f"; these are {n} of the split's {subset_of} images: report scores on all of them"
    return msg + (
        "; this is the whole set, so take its CIDEr-D as a rough check and compare systems on a larger split "
        "(a few hundred images or more)"
    )


def check_metrics(
    metrics: Sequence[str] = DEFAULT_METRICS, tokenize: bool = True, reference_cider: bool = False
) -> tuple[list[Any], dict[str, str]]:
    """Everything :func:`evaluate_captions` checks before it scores, without any captions: every metric
    name is registered (:class:`UnknownNameError` with the closest names), Java is there when the PTB
    tokenizer needs it, and at least one requested metric can run here (:class:`MetricError` saying why
    not and what to do). Returns the scorers that can run and, for the others' keys, why not. Cheap: call
    it before a long decode so a bad request fails first, not after."""
    registry = get_registry()
    scorers = [registry.create("metric", name) for name in _scorer_names(metrics, reference_cider)]
    if not scorers:
        raise MetricError("no metric requested: name at least one, e.g. bleu,meteor,rouge-l,cider-d (`zoo list metrics`)")
    if tokenize and shutil.which("java") is None:
        raise _java_missing_error([k for s in scorers for k in s.keys], tokenize)
    return _available(scorers)


def _available(scorers: list[Any]) -> tuple[list[Any], dict[str, str]]:
    """The scorers that can run here, and for the others' keys why not (asked before anything runs)."""
    ready, not_computed = [], {}
    for s in scorers:
        check = getattr(s, "unavailable_reason", None)
        reason = check() if check is not None else None
        if reason:
            not_computed.update(dict.fromkeys(s.keys, reason))
        else:
            ready.append(s)
    if not ready:
        raise MetricError(
            "no requested metric can be computed here: " + " | ".join(dict.fromkeys(not_computed.values()))
            + " | Fix that, or ask for metrics that can run here as well, e.g. bleu,rouge-l,cider-d "
            "(`zoo list metrics` lists them)"
        )
    return ready, not_computed


def _run(scorer: Any, gts: dict, res: dict, result: EvalResult) -> None:
    """One scorer into ``result``: its keys' scores, per-image CIDEr-D, BLEU's counts; a MetricError on
    the way (SPICE's jar failing) goes to ``not_computed``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SmallCorpusWarning)  # said once, by evaluate_captions
            score, per_image = scorer.compute_score(gts, res)
    except MetricError as exc:
        result.not_computed.update(dict.fromkeys(scorer.keys, str(exc)))
        return
    if len(scorer.keys) == 1:
        score, per_image = [score], [per_image]
    for key, value, values in zip(scorer.keys, score, per_image):
        result.scores[key] = float(value)
        if key == "CIDEr-D":
            result.per_image_cider = {k: float(v) for k, v in zip(gts, values)}
    if getattr(scorer, "name", None) == "bleu":
        result.bleu_counts = getattr(scorer, "counts", None)


# -- COCO-format files --------------------------------------------------------------------------------------


def _field(item: Any, key: str, where: str, path: Path, types: tuple[type, ...]) -> Any:
    if not isinstance(item, dict):
        raise DataError(f"{path}: {where} must be an object, got {type(item).__name__}")
    if key not in item:
        raise DataError(f"{path}: {where} has no {key!r} key")
    value = item[key]
    if not isinstance(value, types) or isinstance(value, bool):
        want = " or ".join(t.__name__ for t in types)
        raise DataError(f"{path}: {where} {key!r} must be {want}, got {value!r}")
    return value


def load_coco_annotations(path: str | Path) -> dict[Any, list[str]]:
    """Reference captions from a COCO caption file (``images`` and ``annotations`` with ``image_id`` and
    ``caption``) as {image_id: [caption, ...]}; images listed without captions map to []."""
    p = Path(path)
    data = read_json(p, "ground-truth file")
    if not isinstance(data, dict):
        raise DataError(f"{p}: a COCO caption file is an object with 'images' and 'annotations', got a {type(data).__name__}")
    if "annotations" not in data:
        raise DataError(f"{p}: missing key 'annotations' (a COCO caption file has 'images' and 'annotations')")
    anns = data["annotations"]
    if not isinstance(anns, list):
        raise DataError(f"{p}: 'annotations' must be a list")
    out: dict[Any, list[str]] = {}
    images = data.get("images", [])
    if not isinstance(images, list):
        raise DataError(f"{p}: 'images' must be a list")
    for i, img in enumerate(images):
        out.setdefault(_field(img, "id", f"images[{i}]", p, (int, str)), [])
    for i, ann in enumerate(anns):
        image_id = _field(ann, "image_id", f"annotations[{i}]", p, (int, str))
        out.setdefault(image_id, []).append(_field(ann, "caption", f"annotations[{i}]", p, (str,)))
    return out


def load_coco_results(path: str | Path) -> dict[Any, str]:
    """Captions to score from a COCO results file (``[{"image_id": ..., "caption": ...}, ...]``) as
    {image_id: caption}. One caption per image: pycocoevalcap keeps duplicates in ``loadRes`` and then
    fails on ``assert len(hypo) == 1``, so a duplicate is refused here, naming the image."""
    p = Path(path)
    data = read_json(p, "results file")
    if not isinstance(data, list):
        raise DataError(f'{p}: a COCO results file is a list of {{"image_id": ..., "caption": ...}}, got a {type(data).__name__}')
    out: dict[Any, str] = {}
    for i, item in enumerate(data):
        image_id = _field(item, "image_id", f"results[{i}]", p, (int, str))
        caption = _field(item, "caption", f"results[{i}]", p, (str,))
        if image_id in out:
            raise DataError(
                f"{p}: image {image_id!r} has more than one result (results[{i}] repeats it). The official "
                "evaluator fails on duplicates (assert len(hypo) == 1); keep one caption per image"
            )
        out[image_id] = caption
    return out


def score_files(
    gt_path: str | Path,
    res_path: str | Path,
    metrics: Sequence[str] = DEFAULT_METRICS,
    tokenize: bool = True,
    reference_cider: bool = False,
) -> EvalResult:
    """Evaluate a COCO results file against a COCO ground-truth file, over the images that have results
    (as the official demo does: ``cocoEval.params['image_id'] = cocoRes.getImgIds()``)."""
    gts = load_coco_annotations(gt_path)
    res = load_coco_results(res_path)
    unknown = next((k for k in res if k not in gts), None)
    if unknown is not None:
        raise DataError(f"{res_path}: image {unknown!r} is not in the ground truth {gt_path}")
    empty = next((k for k in res if not gts[k]), None)
    if empty is not None:
        raise DataError(f"{gt_path}: image {empty!r} has no reference captions, so it cannot be scored")
    skipped = len(gts) - len(res)
    result = evaluate_captions(
        {k: gts[k] for k in res}, res, metrics=metrics, tokenize=tokenize, reference_cider=reference_cider,
        subset_of=len(gts) if skipped else None,
    )
    if skipped:
        result.notes.append(f"{skipped} ground-truth image(s) have no result and were not scored")
    return result


def not_computed_reason(key: str, why: str) -> str:
    """The reason a metric was not computed, without the metric's own "KEY was not computed: " lead-in
    (metric plugins' messages start with it), so callers that say "KEY not computed:" don't say it twice."""
    return why.removeprefix(f"{key} was not computed: ")


def format_scores(result: EvalResult) -> str:
    """A labelled table: every metric x100 (as papers print it) and on pycocoevalcap's 0-1 scale."""
    how = "PTB-tokenized" if result.tokenized else "NOT PTB-tokenized (not the official protocol)"
    lines = [f"COCO caption metrics, {result.num_images} images, {how}; CIDEr-D by {result.cider}", f"  {'metric':<8} {'x100':>7}  {'0-1 scale':>9}"]
    for key, value in result.scores.items():
        lines.append(f"  {key:<8} {value * 100:7.1f}  {value:9.4f}")
    for key, why in result.not_computed.items():
        text = textwrap.fill(f"not computed: {not_computed_reason(key, why)}", width=100, subsequent_indent=" " * 20)
        lines.append(f"  {key:<8} {'n/a':>7}  {text}")
    lines.append(f"  ({SCALE_NOTE})")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)
