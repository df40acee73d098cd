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
