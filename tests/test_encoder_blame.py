"""A plugin encoder that fails while the feature cache is built is named, with its plugin, its file and
line, and what the zoo was doing (the cache build used to pass its exception on bare)."""

from __future__ import annotations

import pytest

import zoo
from zoo.cli import main

PLUGIN = '''
import torch
from torch import nn
from torchvision import transforms

import zoo


class FrozenBroken(zoo.Encoder):
    """Fine while training; fails in eval mode, i.e. when the frozen encoder fills the feature cache."""

    def __init__(self, pretrained=False, freeze=False, img_size=None):
        super().__init__()
        self.name, self.feature_dim, self.size = "frozen-broken", 8, img_size or 32
        self.proj = nn.Conv2d(3, 8, kernel_size=16, stride=16)
        self.frozen = bool(freeze)
        self.requires_grad_(not self.frozen)

    def forward(self, images):
        if not self.training:
            raise RuntimeError("my eval path is broken")
        grid = self.proj(images).flatten(2).transpose(1, 2)
        return zoo.Features(grid=grid, pooled=grid.mean(1))

    def transform(self, train=False):
        return transforms.Compose([transforms.Resize(self.size), transforms.CenterCrop(self.size),
                                   transforms.ToTensor()])

    def config(self):
        return {"img_size": self.size, "freeze": self.frozen}


@zoo.hookimpl
def zoo_register(registry):
    registry.add_encoder("frozen-broken", FrozenBroken)
'''


@pytest.fixture
def plugin_file(tmp_path, fresh_registry, monkeypatch):
    monkeypatch.setenv("ZOO_FEATURE_CACHE", str(tmp_path / "features"))
    path = tmp_path / "broken_encoder_plugin.py"
    path.write_text(PLUGIN)
    return path


def test_an_encoder_failing_while_the_feature_cache_is_built_names_its_plugin(plugin_file, tmp_path, capsys):
    rc = main(["--plugin", str(plugin_file), "train", "--encoder", "frozen-broken", "--decoder", "gru",
               "--tokenizer", "word", "--freeze", "--val-split", "none", "--set", "data.num_train=8",
               "--set", "train.steps=1", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert "encoder 'frozen-broken'" in err and "feature cache" in err and "my eval path is broken" in err, err
    assert "broken_encoder_plugin.py" in err, err
