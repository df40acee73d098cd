"""The COCO caption metrics as plugins: pycocoevalcap's official scorers behind one small interface, plus
our exact vectorised CIDEr-D.

Every factory returns a scorer with pycocoevalcap's ``compute_score(gts, res) -> (score, per_image)``
(``gts``: ``{image_id: [reference, ...]}``, ``res``: ``{image_id: [candidate]}``, both already
PTB-tokenised), and the attributes ``name``, ``keys`` (the labels of what ``score`` holds, e.g.
``["BLEU-1", ..., "BLEU-4"]``) and ``requires_java``. ``unavailable_reason()`` says *before* anything runs
why a scorer cannot run here (no Java; SPICE's CoreNLP jars absent), so an offline machine reports
"SPICE not computed, because ..." instead of starting a download that fails, or worse, a fake number.

Names: ``bleu``, ``meteor``, ``rouge-l``, ``cider-d`` (pycocoevalcap's Cider), ``cider-d-fast``
(:class:`zoo.evaluation.cider.CiderD`, the same numbers ~40x faster) and ``spice``.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

import zoo
from zoo.errors import DataError, MetricError
from zoo.evaluation import JAVA_INSTALL_HINT
from zoo.evaluation.cider import CiderD

SPICE_CORENLP_URL = "http://nlp.stanford.edu/software/stanford-corenlp-full-2015-12-09.zip"


class _Scorer:
    """Shared behaviour: the Java check and pycocoevalcap's input checks, as errors that name the image."""

    name: str = ""
    keys: list[str] = []
    requires_java: bool = False

    def unavailable_reason(self) -> str | None:
        """Why this scorer cannot run here, or None if it can."""
        if self.requires_java and shutil.which("java") is None:
            return f"{self.keys[0]} needs Java, and `java` was not found on PATH. {JAVA_INSTALL_HINT}"
        return None

    def check_available(self) -> None:
        reason = self.unavailable_reason()
        if reason:
            raise MetricError(reason)

    def method(self) -> str:
        return self.keys[0]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {', '.join(self.keys)}>"


def _check_inputs(gts: Mapping[Any, Sequence[str]], res: Mapping[Any, Sequence[str]]) -> None:
    """What pycocoevalcap asserts, as a readable error."""
    if gts.keys() != res.keys():
        odd = next((k for k in gts if k not in res), None)
        where = "has references but no candidate" if odd is not None else "has a candidate but no references"
        odd = odd if odd is not None else next(k for k in res if k not in gts)
        raise DataError(f"image {odd!r} {where}; gts and res need the same image ids")
    for key, hypo in res.items():
        if not isinstance(hypo, list) or len(hypo) != 1:
            raise DataError(f"image {key!r}: res values must be a list with exactly one caption, got {hypo!r}")
        if not isinstance(gts[key], list) or not gts[key]:
            raise DataError(f"image {key!r}: gts values must be a non-empty list of captions")


class Bleu(_Scorer):
    """BLEU-1..4 as COCOEvalCap computes it (pycocoevalcap's BleuScorer, reference length 'closest').
    After ``compute_score``, ``counts`` holds the corpus n-gram statistics (testlen, reflen, guess,
    correct) that pycocoevalcap prints."""

    name = "bleu"
    requires_java = False

    def __init__(self, n: int = 4) -> None:
        self.n = int(n)
        self.keys = [f"BLEU-{i}" for i in range(1, self.n + 1)]
        self.counts: dict[str, Any] | None = None

    def compute_score(self, gts, res):
        from pycocoevalcap.bleu.bleu_scorer import BleuScorer  # lazy: pycocoevalcap loads only when a metric scores

        _check_inputs(gts, res)
        scorer = BleuScorer(n=self.n)
        for key in gts:
            scorer += (res[key][0], gts[key])
        score, per_image = scorer.compute_score(option="closest", verbose=0)
        self.counts = {
            "testlen": scorer._testlen,
            "reflen": scorer._reflen,
            "guess": [sum(c["guess"][k] for c in scorer.ctest) for k in range(self.n)],
            "correct": [sum(c["correct"][k] for c in scorer.ctest) for k in range(self.n)],
        }
        return score, per_image


class Meteor(_Scorer):
    """METEOR 1.5 (pycocoevalcap's jar, Java). The Java process lives for one ``compute_score`` call."""

    name = "meteor"
    keys = ["METEOR"]
    requires_java = True

    def compute_score(self, gts, res):
        from pycocoevalcap.meteor.meteor import Meteor as _Meteor  # lazy: pycocoevalcap loads only when a metric scores

        self.check_available()
        _check_inputs(gts, res)
        meteor = _Meteor()
        try:
            return meteor.compute_score(gts, res)
        except (OSError, ValueError) as exc:
            err = b""
            if meteor.meteor_p.poll() is not None and meteor.meteor_p.stderr is not None:
                err = meteor.meteor_p.stderr.read()[-2000:]
            raise MetricError(
                f"METEOR failed ({type(exc).__name__}: {exc}). The METEOR jar said: "
                f"{err.decode(errors='replace').strip() or '(nothing)'}"
            ) from exc
        finally:
            with meteor.lock:
                proc = meteor.meteor_p
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.kill()
                proc.wait()


class Rouge(_Scorer):
    """ROUGE-L (pycocoevalcap's Rouge, beta 1.2)."""

    name = "rouge-l"
    keys = ["ROUGE-L"]

    def compute_score(self, gts, res):
        from pycocoevalcap.rouge.rouge import Rouge as _Rouge  # lazy: pycocoevalcap loads only when a metric scores

        _check_inputs(gts, res)
        return _Rouge().compute_score(gts, res)


class CiderReference(_Scorer):
    """CIDEr-D as COCOEvalCap computes it: pycocoevalcap's own (slow, pure Python) Cider. ``cider-d-fast``
    gives the same per-image numbers (within 1e-9) much faster."""

    name = "cider-d"
    keys = ["CIDEr-D"]

    def __init__(self, n: int = 4, sigma: float = 6.0) -> None:
        self.n, self.sigma = n, sigma

    def compute_score(self, gts, res):
        from pycocoevalcap.cider.cider import Cider  # lazy: pycocoevalcap loads only when a metric scores

        _check_inputs(gts, res)
        return Cider(n=self.n, sigma=self.sigma).compute_score(gts, res)


def cider_d_fast(n: int = 4, sigma: float = 6.0) -> CiderD:
    """CIDEr-D, exact and vectorised (zoo.evaluation.cider.CiderD): pycocoevalcap's per-image numbers within 1e-9,
    document frequencies from the references being scored."""
    return CiderD(n=n, sigma=sigma)


def spice_files() -> dict[str, Path]:
    """The files pycocoevalcap's SPICE needs: its own jar and the Stanford CoreNLP 3.6.0 jars that it
    otherwise downloads on first use."""
    spec = importlib.util.find_spec("pycocoevalcap.spice")
    if spec is None or not spec.submodule_search_locations:
        raise MetricError("SPICE was not computed: pycocoevalcap is not installed (`pip install pycocoevalcap`)")
    here = Path(list(spec.submodule_search_locations)[0])
    return {
        "spice jar": here / "spice-1.0.jar",
        "CoreNLP jar": here / "lib" / "stanford-corenlp-3.6.0.jar",
        "CoreNLP models jar": here / "lib" / "stanford-corenlp-3.6.0-models.jar",
    }


class Spice(_Scorer):
    """SPICE 1.0 (pycocoevalcap's jar, Java, Stanford CoreNLP 3.6.0). Never downloads: when the CoreNLP
    jars are absent it says which files are missing and how to get them."""

    name = "spice"
    keys = ["SPICE"]
    requires_java = True

    def unavailable_reason(self) -> str | None:
        reason = super().unavailable_reason()
        if reason:
            return "SPICE was not computed: " + reason
        try:
            files = spice_files()
        except MetricError as exc:
            return str(exc)
        missing = [p for p in files.values() if not p.is_file()]
        if not missing:
            return None
        lib = files["CoreNLP jar"].parent
        return (
            "SPICE was not computed: pycocoevalcap's SPICE needs Stanford CoreNLP 3.6.0, which it downloads "
            "on first use (not possible offline), and these files are missing: "
            + ", ".join(str(p) for p in missing)
            + f". To get them, on a machine with internet run `python -c \"from pycocoevalcap.spice."
            f"get_stanford_models import get_stanford_models; get_stanford_models()\"`, or download "
            f"{SPICE_CORENLP_URL} and copy stanford-corenlp-3.6.0.jar and stanford-corenlp-3.6.0-models.jar "
            f"from it into {lib}."
        )

    def compute_score(self, gts, res):
        self.check_available()
        _check_inputs(gts, res)
        from pycocoevalcap.spice.spice import Spice as _Spice  # lazy: pycocoevalcap loads only when a metric scores

        try:
            score, per_image = _Spice().compute_score(gts, res)
        except (subprocess.CalledProcessError, OSError) as exc:
            raise MetricError(f"SPICE was not computed: the SPICE jar failed ({exc}); see its output above") from exc
        # pycocoevalcap returns per-image SPICE in sorted id order; give it back in gts order
        by_id = dict(zip(sorted(gts), (s["All"]["f"] for s in per_image)))
        return float(score), [by_id[k] for k in gts]


@zoo.hookimpl
def zoo_register(registry) -> None:
    registry.add_metric("bleu", Bleu)
    registry.add_metric("meteor", Meteor)
    registry.add_metric("rouge-l", Rouge)
    registry.add_metric("cider-d", CiderReference)
    registry.add_metric("cider-d-fast", cider_d_fast)
    registry.add_metric("spice", Spice)
