"""The evaluation protocol: `zoo score` reproduces the official coco-caption example, SPICE is reported
as not computed with its reason, missing Java and malformed files fail with messages that say what to do.
The Java scorers run once for the whole module (the PTB tokenizer and METEOR take ~20 s)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import zoo.cli
from zoo.errors import DataError, MetricError, UnknownNameError
from zoo.evaluation.coco import (
    PYCOCOEVALCAP_KEYS,
    evaluate_captions,
    format_scores,
    load_coco_annotations,
    load_coco_results,
    score_files,
)
from zoo.registry.manager import get_registry
from zoo.evaluation.cider import SmallCorpusWarning

pytestmark = pytest.mark.xdist_group("coco-eval-example")

GT = "captions_val2014_fakecap_gt.json"
RESULTS = "captions_val2014_fakecap_results.json"


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = zoo.cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """`zoo score` on the official example, all default metrics, run once."""
    from tests.conftest import shared_path

    if shutil.which("java") is None:
        pytest.skip("needs Java for the PTB tokenizer and METEOR")
    example = shared_path("coco-eval-example")
    out = tmp_path_factory.mktemp("score") / "scores.json"
    code, stdout, stderr = run_cli("score", str(example / GT), str(example / RESULTS), "--json", str(out))
    assert code == 0, stderr
    expected = json.loads((example / "expected_scores.json").read_text())
    return stdout, json.loads(out.read_text()), expected


@pytest.mark.slow
@pytest.mark.java
def test_zoo_score_reproduces_the_official_example(official):
    _, scores, expected = official
    ours = {PYCOCOEVALCAP_KEYS[k]: v for k, v in scores["scores"].items()}
    checked = [k for k in expected if k not in ("source", "SPICE", "bleu_counts")]
    assert len(checked) == 7
    for key in checked:
        assert ours[key] == pytest.approx(expected[key], abs=1e-6), key
    assert scores["bleu_counts"] == expected["bleu_counts"]
    assert scores["num_images"] == 1000 and scores["tokenized"] is True
    per_image = scores["per_image_cider"]
    assert len(per_image) == 1000
    assert np.mean(list(per_image.values())) == pytest.approx(scores["scores"]["CIDEr-D"], abs=1e-12)
    assert scores["scale"].startswith("pycocoevalcap scale: 0-1")


@pytest.mark.slow
@pytest.mark.java
def test_zoo_score_prints_labelled_scores_x100(official):
    stdout, scores, _ = official
    assert "x100" in stdout and "0-1 scale" in stdout
    for label, value in scores["scores"].items():
        line = next(l for l in stdout.splitlines() if l.split()[:1] == [label])
        assert f"{value * 100:.1f}" in line and f"{value:.4f}" in line, line


@pytest.mark.slow
@pytest.mark.java
def test_spice_is_reported_not_computed_with_the_reason(official):
    from zoo_plugins.metrics.coco_metrics import Spice

    if Spice().unavailable_reason() is None:
        pytest.skip("SPICE's CoreNLP jars are installed here, so SPICE is computed")
    stdout, scores, _ = official
    assert "SPICE" not in scores["scores"]
    reason = scores["not_computed"]["SPICE"]
    assert "SPICE was not computed" in reason
    assert "stanford-corenlp-3.6.0-models.jar" in reason and "get_stanford_models" in reason
    assert any(l.split()[:2] == ["SPICE", "n/a"] for l in stdout.splitlines())


def test_spice_scorer_refuses_to_run_without_its_jars(monkeypatch, tmp_path):
    from zoo_plugins.metrics import coco_metrics

    monkeypatch.setattr(
        coco_metrics, "spice_files", lambda: {"CoreNLP jar": tmp_path / "lib" / "stanford-corenlp-3.6.0.jar"}
    )
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/java")
    with pytest.raises(MetricError, match=r"SPICE was not computed.*stanford-corenlp-3\.6\.0\.jar"):
        coco_metrics.Spice().compute_score({1: ["a dog"]}, {1: ["a dog"]})


def test_metric_plugins_share_one_interface():
    reg = get_registry()
    expected = {
        "bleu": ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"],
        "meteor": ["METEOR"],
        "rouge-l": ["ROUGE-L"],
        "cider-d": ["CIDEr-D"],
        "cider-d-fast": ["CIDEr-D"],
        "spice": ["SPICE"],
    }
    assert set(expected) <= set(reg.names("metric"))
    for name, keys in expected.items():
        scorer = reg.create("metric", name)
        assert scorer.name == name and list(scorer.keys) == keys
        assert scorer.requires_java == (name in ("meteor", "spice"))
        assert callable(scorer.compute_score)


@pytest.fixture(scope="module")
def example_pairs():
    """The example's references and captions, lower-cased and split (no Java needed)."""
    from tests.conftest import shared_path

    example = shared_path("coco-eval-example")
    gts = load_coco_annotations(example / GT)
    res = load_coco_results(example / RESULTS)
    return {k: [c.lower() for c in gts[k]] for k in res}, {k: c.lower() for k, c in res.items()}


def test_fast_and_reference_cider_agree_per_image(example_pairs):
    gts, res = example_pairs
    fast = evaluate_captions(gts, res, metrics=("cider-d",), tokenize=False)
    ref = evaluate_captions(gts, res, metrics=("cider-d",), tokenize=False, reference_cider=True)
    assert fast.cider == "cider-d-fast" and ref.cider == "cider-d"
    assert list(fast.per_image_cider) == list(res)
    for k in res:
        assert abs(fast.per_image_cider[k] - ref.per_image_cider[k]) <= 1e-9


def test_java_missing_names_what_needs_it(example_pairs, monkeypatch):
    gts, res = example_pairs
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MetricError) as info:
        evaluate_captions(gts, res)
    msg = str(info.value)
    assert "PTB tokenizer" in msg and "METEOR" in msg and "CIDEr-D" in msg
    assert "apt-get install openjdk-17-jre-headless" in msg
    assert "; and" not in msg and "tokenize=False" in msg  # one sentence per point, a remedy for the API too
    # without the tokenizer only METEOR (and SPICE) need Java: reported, the rest computed
    result = evaluate_captions(gts, res, metrics=("bleu", "meteor", "cider-d"), tokenize=False)
    assert "Java" in result.not_computed["METEOR"] and "openjdk" in result.not_computed["METEOR"]
    assert set(result.scores) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr-D"}
    assert "NOT PTB-tokenized" in format_scores(result)


def test_zoo_score_without_java_fails_with_the_reason(eval_example, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    code, _, err = run_cli("score", str(eval_example / GT), str(eval_example / RESULTS))
    assert code == 2 and "Java was not found" in err and "openjdk" in err


def test_small_subsets_warn_and_say_so(example_pairs):
    gts, res = example_pairs
    few = list(res)[:3]
    with pytest.warns(SmallCorpusWarning, match="only 3 image"):
        result = evaluate_captions({k: gts[k] for k in few}, {k: res[k] for k in few}, metrics=("cider-d",), tokenize=False)
    assert any("document frequencies" in n for n in result.notes)
    assert "note:" in format_scores(result)
    # "report the full split" only when these images are part of a larger set
    assert "whole set" in result.notes[0] and "report scores on all" not in result.notes[0]
    with pytest.warns(SmallCorpusWarning, match="3 of the split's 1000 images: report scores on all of them"):
        evaluate_captions({k: gts[k] for k in few}, {k: res[k] for k in few}, metrics=("cider-d",), tokenize=False,
                          subset_of=1000)


def test_cider_small_corpus_advice_suits_the_reader():
    """Python callers get the API's remedy; `zoo train`'s validation, read on a command line, gets flags."""
    import torch

    from tests.helpers import CAPTIONS, tiny_model
    from zoo.data.datasets import load_dataset
    from zoo.evaluation.cider import CiderD
    from zoo.training.config import TrainConfig
    from zoo.training.loop import validate

    gts = {i: [c] for i, c in enumerate(CAPTIONS)}
    with pytest.warns(SmallCorpusWarning) as api:
        CiderD().compute_score(gts, {i: [c] for i, c in enumerate(CAPTIONS)})
    assert "CiderD.from_corpus" in str(api[0].message) and "--set" not in str(api[0].message)

    val = load_dataset("shapes", split="val", num_train=2, num_val=5, num_test=2, image_size=32)
    with pytest.warns(SmallCorpusWarning) as cli:
        validate(tiny_model(), val, TrainConfig(val_images=5, batch_size=2), torch.device("cpu"))
    text = str(cli[0].message)
    assert "from_corpus" not in text and "--set train.val_images=N" in text and "--val-split" in text


def test_unknown_metric_lists_close_names(example_pairs):
    gts, res = example_pairs
    with pytest.raises(UnknownNameError, match="cider-d"):
        evaluate_captions(gts, res, metrics=("cider",), tokenize=False)


def _write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


GOOD_GT = {"images": [{"id": 1}, {"id": 2}], "annotations": [{"image_id": 1, "caption": "a dog"}, {"image_id": 2, "caption": "a cat"}]}


@pytest.mark.parametrize(
    "gt, results, match",
    [
        ("{not json", [], r"gt\.json is not valid JSON"),
        ({"images": []}, [], r"gt\.json: missing key 'annotations'"),
        ({"annotations": [{"image_id": 1}]}, [], r"gt\.json: annotations\[0\] has no 'caption' key"),
        ({"annotations": [{"image_id": 1, "caption": 5}]}, [], r"gt\.json: annotations\[0\] 'caption' must be str"),
        (GOOD_GT, {"image_id": 1, "caption": "x"}, r"res\.json: a COCO results file is a list"),
        (GOOD_GT, [{"caption": "a dog"}], r"res\.json: results\[0\] has no 'image_id' key"),
        (GOOD_GT, [{"image_id": 1}], r"res\.json: results\[0\] has no 'caption' key"),
        (GOOD_GT, [{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}], r"image 1 has more than one result"),
        (GOOD_GT, [{"image_id": 1, "caption": "a"}, {"image_id": 99, "caption": "b"}], r"image 99 is not in the ground truth"),
        ({"images": [{"id": 1}], "annotations": []}, [{"image_id": 1, "caption": "a"}], r"image 1 has no reference captions"),
    ],
)
def test_malformed_files_name_the_file_and_key(tmp_path, gt, results, match):
    gt_path = _write(tmp_path / "gt.json", gt)
    res_path = _write(tmp_path / "res.json", results)
    with pytest.raises(DataError, match=match):
        score_files(gt_path, res_path, metrics=("cider-d",), tokenize=False)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope\.json does not exist"):
        load_coco_results(tmp_path / "nope.json")


def test_score_files_scores_only_images_with_results(tmp_path):
    gt = _write(tmp_path / "gt.json", GOOD_GT)
    res = _write(tmp_path / "res.json", [{"image_id": 1, "caption": "a dog"}])
    with pytest.warns(SmallCorpusWarning):
        result = score_files(gt, res, metrics=("bleu", "rouge-l"), tokenize=False)
    assert result.num_images == 1 and result.scores["BLEU-1"] == pytest.approx(1.0)
    assert any("1 ground-truth image(s) have no result" in n for n in result.notes)
    assert result.per_image_cider == {}


@pytest.mark.java
def test_ptb_tokenizer_keeps_captions_on_their_image():
    """A line break inside a caption would make pycocoevalcap shift every later caption to the wrong
    image; ours become spaces first."""
    from zoo.evaluation.coco import ptb_tokenize

    if shutil.which("java") is None:
        pytest.skip("needs Java")
    out = ptb_tokenize({1: ["A dog\rruns.", "Two, cats!"], 2: ["A cat\u2028sits...", ""], 3: ["The END"]})
    assert out == {1: ["a dog runs", "two cats"], 2: ["a cat sits", ""], 3: ["the end"]}


def test_evaluate_checks_its_inputs():
    with pytest.raises(DataError, match="image 2 has references but no caption"):
        evaluate_captions({1: ["a"], 2: ["b"]}, {1: "a"}, tokenize=False)
    with pytest.raises(DataError, match="image 3 has a caption to score but no references"):
        evaluate_captions({1: ["a"]}, {1: "a", 3: "c"}, tokenize=False)
    with pytest.raises(DataError, match="image 1: references must be a non-empty list"):
        evaluate_captions({1: []}, {1: "a"}, tokenize=False)


def test_no_available_metric_says_why_and_what_to_do(example_pairs, monkeypatch, tmp_path):
    from zoo.evaluation.coco import check_metrics
    from zoo_plugins.metrics import coco_metrics

    monkeypatch.setattr(coco_metrics, "spice_files", lambda: {"CoreNLP jar": tmp_path / "absent.jar"})
    gts, res = example_pairs
    for call in (lambda: check_metrics(("spice",), tokenize=False),
                 lambda: evaluate_captions(gts, res, metrics=("spice",), tokenize=False)):
        with pytest.raises(MetricError) as info:
            call()
        msg = str(info.value)
        assert "no requested metric can be computed here" in msg and "absent.jar" in msg
        assert "bleu,rouge-l,cider-d" in msg
    ready, not_computed = check_metrics(("spice", "cider-d"), tokenize=False)
    assert [s.keys for s in ready] == [["CIDEr-D"]] and "SPICE" in not_computed
    with pytest.raises(UnknownNameError, match="cider-d"):
        check_metrics(("cidr-d",), tokenize=False)


def test_zoo_score_json_is_written_atomically(tmp_path, monkeypatch):
    """A write that fails half way (disk full) leaves the previous --json file as it was."""
    gt = _write(tmp_path / "gt.json", GOOD_GT)
    res = _write(tmp_path / "res.json", [{"image_id": 1, "caption": "a dog"}, {"image_id": 2, "caption": "a cat"}])
    out = tmp_path / "scores.json"
    out.write_text('{"previous": true}')
    real = Path.write_text

    def disk_full(self, data, *args, **kwargs):
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space"):
        zoo.cli.main(["score", str(gt), str(res), "--metrics", "cider-d", "--no-ptb", "--json", str(out)])
    monkeypatch.undo()
    assert json.loads(out.read_text()) == {"previous": True}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
