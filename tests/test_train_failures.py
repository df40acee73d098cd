"""No failure loses trained steps: the state is written before validating, and any exception inside the
loop saves the last completed step and says how to resume. Each failing run resumes and ends bit-identical
to a run that was never interrupted (weights, best model, validation scores)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import zoo
from zoo.cli import main as zoo_main
from zoo.models.caption_model import CaptionModel
from zoo.training.runs import RunSpec, execute
from zoo.training.run_guard import RunFailed
from zoo.training.state import saved_step

pytestmark = [pytest.mark.xdist_group("train"), pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:CIDEr-D on 4 images")]


def spec() -> RunSpec:
    """10 steps of 8 pairs (5 per epoch), dropout on (the RNG must be restored), validation at 4, 8, 10."""
    return RunSpec(
        encoder="resnet10t", decoder="gru", tokenizer="word", data="shapes",
        encoder_kwargs={"img_size": 32, "freeze": True},
        decoder_kwargs={"embed_size": 8, "hidden_size": 16, "dropout": 0.3},
        tokenizer_kwargs={"min_count": 0},
        data_options={"num_train": 40, "num_val": 4, "num_test": 4, "image_size": 32},
        train={"steps": 10, "batch_size": 8, "lr": 3e-3, "warmup_steps": 0, "val_images": 4,
               "eval_every": 4, "log_every": 1, "progress": False},
    )


@pytest.fixture(scope="module")
def straight(cache_env, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    execute(spec(), out, progress=False)
    return out


def validations(run: Path) -> list[tuple[int, float]]:
    entries = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [(e["step"], e["val_cider_d"]) for e in entries if "val_cider_d" in e]


def assert_same_run(a: Path, b: Path, lost_log: tuple[int, ...] = ()) -> None:
    for name in ("last.safetensors", "best.safetensors"):
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), (name, k)
    assert validations(a) == validations(b)
    steps = [json.loads(line)["step"] for line in (b / "log.jsonl").read_text().splitlines() if "loss" in line]
    assert steps == [s for s in range(1, 11) if s not in lost_log]  # every step logged once


def failing_once(monkeypatch, target: object, attr: str, at_call: int, exc: BaseException) -> None:
    """``target.attr`` raises ``exc`` on its ``at_call``-th call (1-based) and works otherwise."""
    real = getattr(target, attr)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(target, attr, wrapper)


def test_a_decoder_that_breaks_at_validation_loses_nothing(straight, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    with monkeypatch.context() as m:  # the second validation (step 8) breaks in the decoder's generation
        failing_once(m, CaptionModel, "generate", 2, RuntimeError("shape '[32, 3, 96]' is invalid"))
        with pytest.raises(zoo.ZooError) as info:
            execute(spec(), run, progress=False)
    msg = str(info.value)
    assert "step 8 of 10" in msg and "RuntimeError: shape '[32, 3, 96]' is invalid" in msg
    assert f"zoo train --resume {run}" in msg and "no trained step is lost" in msg
    assert saved_step(run / "state.safetensors") == 8  # written before validating
    # through the command line: one message, no traceback; --debug (or ZOO_DEBUG=1) adds the traceback
    with monkeypatch.context() as m:
        failing_once(m, CaptionModel, "generate", 1, RuntimeError("still broken"))
        assert zoo_main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"zoo train --resume {run}" in err and "still broken" in err
    with monkeypatch.context() as m:
        failing_once(m, CaptionModel, "generate", 1, RuntimeError("still broken"))
        assert zoo_main(["train", "--resume", str(run), "--no-progress", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    execute(spec(), run, resume=True, progress=False)  # the decoder is fixed: validates step 8 first
    assert_same_run(straight, run)


def test_a_full_disk_saves_the_state_and_resumes_exactly(straight, tmp_path, monkeypatch):
    import zoo.training.loop

    run = tmp_path / "run"
    full = OSError(errno.ENOSPC, "No space left on device")
    with monkeypatch.context() as m:  # the log write after step 6 (no checkpoint is due there) fails
        real_open = open

        def open_(path, *args, **kwargs):
            if str(path).endswith("log.jsonl") and args[:1] == ("a",) and open_.lines == 6:
                raise full
            open_.lines += str(path).endswith("log.jsonl") and args[:1] == ("a",)
            return real_open(path, *args, **kwargs)

        open_.lines = 0
        m.setattr("builtins.open", open_)
        with pytest.raises(RunFailed) as info:
            execute(spec(), run, progress=False)
    assert "No space left on device" in str(info.value) and "step 6 of 10" in str(info.value)
    assert "(written now)" in str(info.value)
    assert saved_step(run / "state.safetensors") == 6  # the failure saved the last completed step
    with monkeypatch.context() as m:  # resumed; now writing best.safetensors at step 8 fails
        failing_once(m, zoo.training.loop, "save", 1, full)
        with pytest.raises(RunFailed, match="No space left on device"):
            execute(spec(), run, resume=True, progress=False)
    assert saved_step(run / "state.safetensors") == 8
    execute(spec(), run, resume=True, progress=False)
    assert_same_run(straight, run, lost_log=(6,))  # the one line the full disk refused


def test_a_kill_during_the_checkpoint_write_keeps_the_previous_state(straight, tmp_path, monkeypatch):
    import zoo.training.state

    run = tmp_path / "run"
    real = zoo.training.state.save_file
    calls = {"n": 0}

    def dies_while_writing(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] == 1:
            return real(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(b"half a checkpoint")  # the kill comes mid-write, every time
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(zoo.training.state, "save_file", dies_while_writing)
        with pytest.raises(RunFailed) as info:
            execute(spec(), run, progress=False)
    msg = str(info.value)
    assert info.value.exit_code == 130 and "interrupted" in msg
    assert "the last saved state is step 4" in msg and "steps 5 to 8 will be trained again" in msg
    assert saved_step(run / "state.safetensors") == 4  # the atomic write left the old state intact
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    execute(spec(), run, resume=True, progress=False)
    assert_same_run(straight, run)
