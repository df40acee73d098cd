"""The `zoo` command line: list, info, and errors without tracebacks."""

from __future__ import annotations

import json

import pytest

from zoo.cli import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_list_kinds(capsys):
    rc, out, _ = run(capsys, "list", "decoders")
    assert rc == 0 and out.split() == ["gru", "gru-attn", "gru-stacked", "lstm"]
    rc, out, _ = run(capsys, "list", "encoders", "convnext*")
    names = out.split()
    assert rc == 0 and "convnext_tiny" in names and all(n.startswith("convnext") for n in names)
    assert run(capsys, "list", "tokenizers")[1].split() == ["sentencepiece", "word"]
    assert set(run(capsys, "list", "datasets")[1].split()) == {"coco", "coco-karpathy", "folder", "shapes"}
    assert {"bleu", "meteor", "rouge-l", "cider-d", "cider-d-fast", "spice"} <= set(run(capsys, "list", "metrics")[1].split())
    assert "gru-resnet50-coco" in run(capsys, "list", "models")[1].split()
    weights = run(capsys, "list", "weights")[1]
    assert "efficientnet-lite-weights" in weights and "timm-hub-weights" in weights
    # the offline source is asked before the hub
    assert weights.index("efficientnet-lite-weights") < weights.index("timm-hub-weights")


def test_info_shows_origin_and_options(capsys):
    rc, out, _ = run(capsys, "info", "gru-attn")
    assert rc == 0
    assert "plugin: gru-attn" in out and "module: zoo_plugins.decoders.gru_attn" in out
    assert "attention_size = 512" in out and "hidden_size = 512" in out
    rc, out, _ = run(capsys, "info", "gru-attn", "--json")
    data = json.loads(out)
    assert data["kind"] == "decoder" and data["options"]["gate"] is True
    rc, out, _ = run(capsys, "info", "resnet10t")
    assert rc == 0 and "family: timm" in out
    rc, out, _ = run(capsys, "info", "gru-resnet50-coco")
    assert rc == 0 and "decoder: gru" in out


def test_unknown_names_are_errors_not_tracebacks(capsys):
    rc, _, err = run(capsys, "info", "gru-atn")
    assert rc == 2 and "gru-attn" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["list", "decoderz"])  # argparse names the valid kinds
    assert "decoders" in capsys.readouterr().err


def test_plugin_flag_with_a_file(capsys, tmp_path, fresh_registry):
    f = tmp_path / "extra_decoder.py"
    f.write_text(
        "import zoo\n"
        "from zoo_plugins.decoders.gru import GRUDecoder\n"
        "@zoo.hookimpl\n"
        "def zoo_register(registry):\n"
        "    registry.add_decoder('my-gru', GRUDecoder)\n"
    )
    rc, out, _ = run(capsys, "--plugin", str(f), "list", "decoders", "my-*")
    assert rc == 0 and out.split() == ["my-gru"]


# -- zoo eval / zoo caption: bad requests fail before decoding, files survive a scoring failure -------------
SHAPES = ["--data", "shapes", "--split", "test", "--set", "data.num_train=4", "--set", "data.num_val=2",
          "--set", "data.num_test=6", "--set", "data.image_size=32", "--no-record", "--no-progress"]


@pytest.fixture
def tiny_checkpoint(tmp_path):
    import zoo
    from tests.helpers import tiny_model

    return zoo.save(tiny_model(), tmp_path / "ckpt" / "tiny.safetensors")


@pytest.fixture
def no_decoding(monkeypatch):
    """Decoding fails the test: these requests must be refused before any image is decoded."""
    import zoo.train

    def decode(*a, **k):
        raise AssertionError("decoded before checking the request")

    monkeypatch.setattr(zoo.train, "generate_for_items", decode)


def _eval_files(tmp_path):
    return sorted(p.name for p in (tmp_path / "out").glob("*.json")) if (tmp_path / "out").exists() else []


def test_eval_unknown_metric_fails_before_decoding(capsys, tmp_path, tiny_checkpoint, no_decoding):
    rc, _, err = run(capsys, "eval", str(tiny_checkpoint), *SHAPES, "--out", str(tmp_path / "out"), "--metrics", "bleu,cidr-d")
    assert rc == 2 and "cidr-d" in err and "cider-d" in err and "Traceback" not in err


def test_eval_without_java_fails_before_decoding(capsys, tmp_path, tiny_checkpoint, no_decoding, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    rc, _, err = run(capsys, "eval", str(tiny_checkpoint), *SHAPES, "--out", str(tmp_path / "out"), "--metrics", "cider-d")
    assert rc == 2 and "Java was not found" in err and "openjdk" in err


def test_eval_with_no_metric_available_fails_before_decoding(capsys, tmp_path, tiny_checkpoint, no_decoding, monkeypatch):
    """`--metrics spice` offline: SPICE cannot run (its CoreNLP jars are absent), so nothing could be scored."""
    from zoo_plugins.metrics import coco_metrics

    missing = {k: tmp_path / "absent" / f"{k}.jar" for k in ("spice jar", "CoreNLP jar", "CoreNLP models jar")}
    monkeypatch.setattr(coco_metrics, "spice_files", lambda: missing)
    rc, _, err = run(capsys, "eval", str(tiny_checkpoint), *SHAPES, "--out", str(tmp_path / "out"), "--metrics", "spice")
    assert rc == 2 and "SPICE" in err and "Traceback" not in err
    assert _eval_files(tmp_path) == []


@pytest.mark.parametrize("flag, value, option", [("--beam", "0", "--beam"), ("--max-len", "-1", "--max-len")])
def test_bad_decoding_options_are_errors_not_tracebacks(capsys, tmp_path, tiny_checkpoint, no_decoding, flag, value, option):
    rc, _, err = run(capsys, "eval", str(tiny_checkpoint), *SHAPES, "--out", str(tmp_path / "out"), flag, value)
    assert rc == 2 and option in err and "≥ 1" in err and "Traceback" not in err
    import PIL.Image

    img = tmp_path / "img.png"
    PIL.Image.new("RGB", (32, 32), (200, 30, 30)).save(img)
    rc, _, err = run(capsys, "caption", str(tiny_checkpoint), str(img), flag, value)
    assert rc == 2 and option in err and "≥ 1" in err


def _needs_java():
    import shutil

    if shutil.which("java") is None:
        pytest.skip("needs Java for the PTB tokenizer")


@pytest.mark.java
def test_scoring_failure_leaves_files_zoo_score_can_use(capsys, tmp_path, tiny_checkpoint, monkeypatch):
    _needs_java()
    import zoo.evaluation
    from zoo.errors import MetricError

    def crash(captions):
        raise MetricError("the PTB tokenizer could not run (simulated crash)")

    monkeypatch.setattr(zoo.evaluation, "ptb_tokenize", crash)
    with pytest.warns(UserWarning):  # 6 images: the small-corpus warning
        rc, _, err = run(capsys, "eval", str(tiny_checkpoint), *SHAPES, "--out", str(tmp_path / "out"), "--metrics", "cider-d")
    assert rc == 2 and "simulated crash" in err and "zoo score" in err
    assert _eval_files(tmp_path) == ["references_shapes_test_beam3.json", "results_shapes_test_beam3.json"]
    out = tmp_path / "out"
    assert len(json.loads((out / "results_shapes_test_beam3.json").read_text())) == 6
    monkeypatch.undo()
    with pytest.warns(UserWarning):
        rc, stdout, err = run(capsys, "score", str(out / "references_shapes_test_beam3.json"),
                              str(out / "results_shapes_test_beam3.json"), "--metrics", "cider-d", "--no-ptb")
    assert rc == 0 and "6 images" in stdout, err


@pytest.mark.java
def test_eval_files_are_named_by_every_setting_and_say_the_scale(capsys, tmp_path, tiny_checkpoint):
    _needs_java()
    from zoo.evaluation import SCALE_NOTE

    common = ["eval", str(tiny_checkpoint), *SHAPES, "--out", str(tmp_path / "out"), "--metrics", "bleu,cider-d"]
    with pytest.warns(UserWarning):
        assert run(capsys, *common)[0] == 0
        assert run(capsys, *common, "--max-len", "8", "--length-penalty", "0.5", "--max-images", "4")[0] == 0
    files = _eval_files(tmp_path)
    assert "metrics_shapes_test_beam3.json" in files  # the default case keeps the plain name
    assert "metrics_shapes_test_beam3_len8_lp0.5_first4.json" in files and len(files) == 6
    default = json.loads((tmp_path / "out" / "metrics_shapes_test_beam3.json").read_text())
    other = json.loads((tmp_path / "out" / "metrics_shapes_test_beam3_len8_lp0.5_first4.json").read_text())
    assert default["num_images"] == 6 and other["num_images"] == 4
    assert other["decoding"] == {"beam_size": 3, "max_len": 8, "length_penalty": 0.5}
    assert default["scale"] == SCALE_NOTE and "CIDEr-D 0-10" in default["scale"]
