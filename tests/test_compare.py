"""`zoo compare`: same budget for every run, every run recorded, and an interrupted compare resumes."""

from __future__ import annotations

import pytest

from zoo.results.compare import CompareConfig, compare, plan
from zoo.results.database import ResultsDB
from zoo.training.runs import execute

pytestmark = [pytest.mark.xdist_group("train"), pytest.mark.slow]


def config() -> CompareConfig:
    return CompareConfig(
        encoders=["resnet10t"], decoders=["gru", "lstm"], tokenizers=["word"], data="shapes",
        data_options={"num_train": 200, "num_val": 10, "num_test": 30}, seeds=[0], train={"steps": 12},
        metrics=("cider-d",), beam_size=2,
        overrides=["encoder.img_size=48", "encoder.freeze=true", "decoder.hidden_size=32", "decoder.embed_size=16",
                   "tokenizer.min_count=0", "train.batch_size=32", "train.progress=false", "train.eval_every=1000",
                   "train.checkpoint_every=4"],
    )


def test_every_run_gets_the_same_budget_and_settings():
    runs = plan(config())
    assert [name for name, _ in runs] == ["resnet10t-gru-word-seed0", "resnet10t-lstm-word-seed0"]
    trains = [spec.train for _, spec in runs]
    assert trains[0] == trains[1] and trains[0]["steps"] == 12 and trains[0]["seed"] == 0
    assert runs[0][1].encoder_kwargs == runs[1][1].encoder_kwargs == {"img_size": 48, "freeze": True}


def test_interrupted_compare_resumes_without_redoing_finished_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_FEATURE_CACHE", str(tmp_path / "cache"))
    cfg, out, db = config(), tmp_path / "cmp", tmp_path / "results.sqlite"
    said: list[str] = []

    def interrupt_at_second_run(msg: str) -> None:
        said.append(msg)
        if msg.startswith("[2/2]"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compare(cfg, out, db_path=db, progress=False, say=interrupt_at_second_run)
    # the second run had got part of the way through its training when it was killed
    second = dict(plan(cfg))["resnet10t-lstm-word-seed0"]
    execute(second, out / "resnet10t-lstm-word-seed0", progress=False, stop_after=5)
    first_mtime = (out / "resnet10t-gru-word-seed0" / "last.safetensors").stat().st_mtime_ns

    said.clear()
    rows = compare(cfg, out, db_path=db, progress=False, say=said.append)
    assert said[0] == "[1/2] resnet10t-gru-word-seed0: finished earlier, skipped"
    assert said[1] == "[2/2] resnet10t-lstm-word-seed0: resuming"
    assert (out / "resnet10t-gru-word-seed0" / "last.safetensors").stat().st_mtime_ns == first_mtime
    assert [r["run"] for r in rows] == ["resnet10t-gru-word-seed0", "resnet10t-lstm-word-seed0"]
    with ResultsDB(db) as rdb:
        recorded = rdb.rows(data="shapes", split="test")
    assert sorted(r.decoder for r in recorded) == ["gru", "lstm"]  # one row each: nothing redone
    assert {r.decoding["beam_size"] for r in recorded} == {2}


def test_a_compare_folder_is_reused_only_with_the_same_settings(tmp_path):
    """Finished runs are skipped and interrupted ones resumed, so a folder made with another budget,
    split or decoding must be refused (naming what differs), while adding decoders or seeds is fine."""
    import json

    import zoo
    from zoo.results.compare import _check_reuse, _settings_json

    cfg, out = config(), tmp_path / "cmp"
    out.mkdir()
    (out / "compare.json").write_text(_settings_json(cfg))
    more = config()
    more.decoders, more.seeds = ["gru", "lstm", "gru-attn"], [0, 1]
    _check_reuse(more, plan(more), out)  # new combinations: fine
    for change, named in [({"beam_size": 5}, "beam_size"), ({"split": "val"}, "split"), ({"train": {"steps": 99}}, "train")]:
        other = config()
        for k, v in change.items():
            setattr(other, k, v)
        with pytest.raises(zoo.ZooError, match=named):
            _check_reuse(other, plan(other), out)
    name, spec = plan(cfg)[0]
    (out / name).mkdir()
    spec.decoder_kwargs["hidden_size"] = 64  # as if that run had been trained with another setting
    (out / name / "run.json").write_text(spec.to_json())
    with pytest.raises(zoo.ZooError, match="decoder.hidden_size"):
        _check_reuse(cfg, plan(cfg), out)
    assert json.loads((out / "compare.json").read_text())["beam_size"] == cfg.beam_size


# -- a compare checks everything it can before it trains anything ------------------------------------------
_TINY = ["--encoder", "resnet10t", "--steps", "2", "--no-progress", "--set", "data.num_train=40",
         "--set", "data.num_val=4", "--set", "data.num_test=4", "--set", "data.image_size=32",
         "--set", "encoder.img_size=32", "--set", "decoder.hidden_size=8", "--set", "decoder.embed_size=8",
         "--set", "tokenizer.min_count=0", "--set", "train.batch_size=8", "--set", "train.eval_every=1000"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--decoder", "gru,gruu"], r"unknown decoder 'gruu'.*Did you mean: gru"),
        (["--decoder", "gru", "--tokenizer", "word,wrod"], r"unknown tokenizer 'wrod'.*Did you mean: word"),
        (["--decoder", "gru", "--data", "shape"], r"unknown dataset 'shape'.*Did you mean: shapes"),
        (["--decoder", "gru", "--metrics", "bleu,cidr"], r"unknown metric 'cidr'.*Did you mean: cider-d"),
        (["--decoder", "gru", "--beam", "0"], r"beam_size \(--beam\) must be an integer ≥ 1"),
        (["--decoder", "gru", "--seeds", "a,b"], r"--seeds 'a,b': 'a' is not a whole number.*e.g. --seeds 1,2"),
        (["--decoder", "gru", "--set", "train.lr=-1"], r"train.lr must be a number > 0"),
        (["--decoder", "gru,gru-attn", "--set", "decoder.attention_size=8"],
         r"unknown option decoder.attention_size\. decoder 'gru' takes: .*hidden_size"),
        (["--decoder", "gru", "--split", "tset"], r"split 'tset'"),
    ],
)
def test_bad_compare_inputs_fail_before_any_training(tmp_path, monkeypatch, capsys, args, message):
    import re

    from zoo.cli import main as zoo_main

    monkeypatch.setenv("ZOO_FEATURE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cmp"
    rc = zoo_main(["compare", *_TINY, *args, "--out", str(out), "--db", str(tmp_path / "r.sqlite")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert re.search(message, err), err
    assert not out.exists()  # nothing trained, and no compare.json left behind


def test_compare_without_java_fails_before_training(tmp_path, monkeypatch, capsys):
    from zoo.cli import main as zoo_main

    monkeypatch.setenv("ZOO_FEATURE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
    out = tmp_path / "cmp"
    rc = zoo_main(["compare", *_TINY, "--decoder", "gru", "--metrics", "bleu,cider-d", "--out", str(out),
                   "--db", str(tmp_path / "r.sqlite")])
    err = capsys.readouterr().err
    assert rc == 2 and "Java" in err and not out.exists()
