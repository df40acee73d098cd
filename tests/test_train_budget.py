"""A training budget beyond any real run is refused at once, naming the setting (issue 17, item 7:
``train.steps=1e99`` was taken and ran forever)."""

from __future__ import annotations

import pytest

from zoo.cli import main as zoo_main
from zoo.errors import ZooError
from zoo.training.config import MAX_STEPS, TrainConfig
from zoo.training.schedule import total_steps


@pytest.mark.parametrize("setting, value", [("steps", "1e99"), ("steps", 10**12), ("epochs", "1e99"),
                                            ("eval_every", 1e99), ("warmup_steps", "1e30")])
def test_a_budget_beyond_any_run_is_refused_naming_the_setting_and_the_bound(setting, value):
    with pytest.raises(ZooError) as err:
        TrainConfig.from_dict({setting: value})
    msg = str(err.value)
    assert f"train.{setting}" in msg and "≤ 1,000" in msg and str(value) in msg, msg


def test_the_largest_budget_is_still_taken():
    assert TrainConfig.from_dict({"steps": MAX_STEPS}).steps == MAX_STEPS
    assert TrainConfig.from_dict({"steps": "1e3"}).steps == 1000


def test_epochs_that_add_up_to_too_many_steps_are_refused():
    cfg = TrainConfig.from_dict({"epochs": 10**6, "batch_size": 1})
    with pytest.raises(ZooError, match=r"train.epochs=1000000 over 5,000 .* is 5,000,000,000 optimiser steps"):
        total_steps(cfg, 5000)


def test_the_command_refuses_steps_1e99_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    rc = zoo_main(["train", "--encoder", "resnet10t", "--decoder", "gru", "--tokenizer", "word", "--freeze",
                   "--val-split", "none", "--set", "data.num_train=4", "--set", "train.steps=1e99",
                   "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "train.steps must be an integer ≥ 1 and ≤ 1,000,000,000" in err and "'1e99'" in err, err
    assert not out.exists()
