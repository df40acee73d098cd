"""A loss that is not finite stops training at once (issue 17, item 3): the step is never applied, the state
on disk keeps finite weights, and the message says so instead of "no trained step is lost"."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from zoo.training.run_guard import RunFailed
from zoo.training.runs import RunSpec, execute
from zoo.training.state import saved_step

pytestmark = [pytest.mark.xdist_group("train"), pytest.mark.filterwarnings("ignore::UserWarning")]


def _spec(**train) -> RunSpec:
    return RunSpec(
        encoder="resnet10t", decoder="gru", tokenizer="word", data="shapes",
        encoder_kwargs={"img_size": 32, "freeze": True},
        decoder_kwargs={"embed_size": 8, "hidden_size": 16},
        tokenizer_kwargs={"min_count": 0},
        data_options={"num_train": 40, "num_val": 4, "num_test": 4, "image_size": 32},
        val_split=None,
        train={"steps": 10, "batch_size": 8, "warmup_steps": 0, "log_every": 1, "checkpoint_every": 1,
               "progress": False, **train},
    )


@pytest.mark.parametrize("lr, weight_decay, says", [
    (1e36, 0.0, "the loss of step {n} is (nan|inf): training stops before that step changes the weights"),
    (1e30, 0.01, "the optimiser's update at step {n} made weights NaN or infinite .* these weights are never saved"),
])
def test_a_nan_loss_or_update_stops_training_and_never_saves_nan(cache_env, tmp_path, lr, weight_decay, says):
    """A huge learning rate sends the weights to ~lr in one step: at 1e36 without weight decay the next
    forward overflows (a NaN loss); with decay, AdamW's decay term overflows the update itself (finite loss,
    NaN weights)."""
    import re

    out = tmp_path / "run"
    with pytest.raises(RunFailed) as err:
        execute(_spec(lr=lr, weight_decay=weight_decay), out, progress=False)
    msg = str(err.value)
    state = out / "state.safetensors"
    step = saved_step(state)
    assert re.search(says.format(n=step + 1), msg), msg
    assert f"train.lr={lr:g}" in msg
    assert "no trained step is lost" not in msg
    assert f"the last saved state is step {step}" in msg and "--resume" in msg
    weights = {k: v for k, v in load_file(str(state)).items() if k.startswith("model/")}
    assert weights and all(bool(torch.isfinite(v).all()) for v in weights.values() if v.is_floating_point())
    losses = [e["loss"] for e in map(__import__("json").loads, (out / "log.jsonl").read_text().splitlines())
              if "loss" in e]
    assert losses and all(math.isfinite(x) for x in losses)  # nothing non-finite was logged as trained


def test_the_state_is_never_saved_with_nan_weights(tmp_path):
    from zoo.errors import CheckpointError
    from zoo.training.state import save_state

    from .helpers import tiny_model

    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters())
    with torch.no_grad():
        next(model.decoder.parameters()).fill_(float("nan"))
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        save_state(tmp_path / "state.safetensors", model, opt, {"step": 3})
    assert not (tmp_path / "state.safetensors").exists()
