"""The example third-party decoder (examples/zoo-transformer-decoder), installed as a real package with an
entry point, and also loaded by hand with --plugin: it appears, trains and generates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zoo

from .conftest import ROOT
from .helpers import images, tiny_tokenizer

EXAMPLE = ROOT / "examples" / "zoo-transformer-decoder"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """pip-install the example into a private folder (not the project venv) and return it."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(EXAMPLE)],
        check=True,
        capture_output=True,
    )
    return target


def _zoo(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=env, timeout=300)


def test_installed_package_is_autoloaded(installed):
    out = _zoo(["list", "decoders"], {"PYTHONPATH": str(installed), "ZOO_DISABLE_PLUGIN_AUTOLOAD": "0"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["gru", "gru-attn", "gru-stacked", "lstm", "transformer"]
    info = _zoo(["info", "transformer", "--json"], {"PYTHONPATH": str(installed), "ZOO_DISABLE_PLUGIN_AUTOLOAD": "0"})
    data = json.loads(info.stdout)
    assert data["plugin"] == "transformer" and data["module"] == "zoo_transformer"
    assert data["options"]["num_layers"] == 2
    # the autoload switch keeps third-party plugins out
    off = _zoo(["list", "decoders"], {"PYTHONPATH": str(installed), "ZOO_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert "transformer" not in off.stdout.split()


def test_plugin_flag_loads_by_module_name():
    env = {"PYTHONPATH": str(EXAMPLE), "ZOO_DISABLE_PLUGIN_AUTOLOAD": "1"}
    out = _zoo(["--plugin", "zoo_transformer", "list", "decoders"], env)
    assert out.returncode == 0, out.stderr
    assert "transformer" in out.stdout.split()
    bad = _zoo(["--plugin", "no_such_plugin_mod", "list", "decoders"], env)
    assert bad.returncode == 2 and "plugin 'no_such_plugin_mod' could not be loaded" in bad.stderr


def test_third_party_decoder_trains_and_generates(fresh_registry, monkeypatch, tmp_path):
    """What the package's own tests (examples/zoo-transformer-decoder/tests) run, then the whole model."""
    from zoo.testing import check_decoder

    monkeypatch.syspath_prepend(str(EXAMPLE))
    zoo.load_plugin("zoo_transformer")
    check_decoder("transformer", d_model=32, dropout=0.0, lr=3e-3)
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    model = zoo.create_model(encoder="resnet10t", decoder="transformer", tokenizer=tok,
                             encoder_kwargs={"img_size": 32, "freeze": True}, decoder_kwargs={"d_model": 32, "dropout": 0.0})
    feats = model.encode(images(2))
    out = model.generate(feats, beam_size=3, max_len=12)
    path = zoo.save(model, tmp_path / "t.safetensors")
    assert zoo.load(path).generate(feats, beam_size=3, max_len=12) == out

