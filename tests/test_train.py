"""Training on `shapes`: a model that learns, evaluation files pycocoevalcap agrees with, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import zoo
from zoo.cli import main as zoo_main
from zoo.training.runs import RunSpec, build_model, execute, load_split

pytestmark = [pytest.mark.xdist_group("train"), pytest.mark.slow]

SHAPES = {"num_train": 1500, "num_val": 60, "num_test": 80}


def shapes_spec(decoder: str = "gru", steps: int = 300, **train) -> RunSpec:
    return RunSpec(
        encoder="resnet10t",
        decoder=decoder,
        tokenizer="word",
        data="shapes",
        encoder_kwargs={"img_size": 64, "freeze": True},
        decoder_kwargs={"embed_size": 64, "hidden_size": 128},
        tokenizer_kwargs={"min_count": 0},
        data_options=dict(SHAPES),
        train={"steps": steps, "batch_size": 64, "lr": 3e-3, "warmup_steps": 20, "val_images": 60,
               "eval_every": 150, "progress": False, **train},
    )


@pytest.fixture(scope="module")
def trained(cache_env, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "gru"
    execute(shapes_spec(), out, progress=False)
    return out


def test_training_writes_a_complete_run_folder(trained):
    for name in ("run.json", "log.jsonl", "state.safetensors", "best.safetensors", "last.safetensors", "summary.json"):
        assert (trained / name).exists(), name
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in log if "loss" in e]
    assert losses[-1] < 0.6 * losses[0]
    vals = [e["val_cider_d"] for e in log if "val_cider_d" in e]
    assert len(vals) == 2 and vals[-1] > 0.5
    assert RunSpec.from_file(trained / "run.json").decoder == "gru"


def test_training_raises_heldout_cider_far_above_untrained(trained):
    from zoo.evaluation.model_eval import evaluate_model

    spec = RunSpec.from_file(trained / "run.json")
    test_set = load_split(spec, "test")
    torch.manual_seed(0)
    untrained = build_model(spec, load_split(spec, "train"))
    before = evaluate_model(untrained, test_set, beam_size=1, metrics=("cider-d",), progress=False)
    after = evaluate_model(zoo.load(trained / "best.safetensors"), test_set, beam_size=3, metrics=("cider-d",), progress=False)
    assert before.metrics["CIDEr-D"] < 0.1
    assert after.metrics["CIDEr-D"] > 0.8, after.metrics
    assert after.metrics["CIDEr-D"] > 10 * max(before.metrics["CIDEr-D"], 0.01)


@pytest.mark.java
def test_zoo_eval_files_rescore_identically_with_pycocoevalcap(trained, tmp_path, capsys):
    from pycocoevalcap.eval import COCOEvalCap
    from pycocotools.coco import COCO

    db = tmp_path / "results.sqlite"
    rc = zoo_main(["eval", str(trained), "--split", "test", "--beam", "2", "--out", str(tmp_path / "ev"),
                   "--db", str(db), "--metrics", "bleu,meteor,rouge-l,cider-d", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "CIDEr-D" in printed and "x100" in printed.replace("×", "x")
    results = tmp_path / "ev" / "results_shapes_test_beam2.json"
    metrics = json.loads((tmp_path / "ev" / "metrics_shapes_test_beam2.json").read_text())
    assert metrics["decoding"]["beam_size"] == 2 and metrics["num_images"] == SHAPES["num_test"]
    assert metrics["data"] == "shapes" and metrics["split"] == "test"
    # rescore with pycocoevalcap itself, from a COCO-format ground truth of the same split
    spec = RunSpec.from_file(trained / "run.json")
    test_set = load_split(spec, "test")
    gt = {"images": [{"id": it.image_id} for it in test_set], "annotations": [], "type": "captions",
          "info": {}, "licenses": []}
    for it in test_set:
        for c in it.captions:
            gt["annotations"].append({"id": len(gt["annotations"]), "image_id": it.image_id, "caption": c})
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    coco = COCO(str(gt_path))
    ev = COCOEvalCap(coco, coco.loadRes(str(results)))
    # COCOEvalCap.evaluate() would also run SPICE (offline here): run its steps without it
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ids = coco.getImgIds()
    gts = PTBTokenizer().tokenize({i: ev.coco.imgToAnns[i] for i in ids})
    res = PTBTokenizer().tokenize({i: ev.cocoRes.imgToAnns[i] for i in ids})
    official = {}
    b, _ = Bleu(4).compute_score(gts, res)
    official.update({f"BLEU-{k + 1}": b[k] for k in range(4)})
    official["METEOR"], _ = Meteor().compute_score(gts, res)
    official["ROUGE-L"], _ = Rouge().compute_score(gts, res)
    official["CIDEr-D"], _ = Cider().compute_score(gts, res)
    for k, v in official.items():
        assert metrics["metrics"][k] == pytest.approx(v, abs=1e-9), k
    # and the row landed in the results database
    from zoo.results.database import ResultsDB

    with ResultsDB(db) as rdb:
        rows = rdb.rows(data="shapes", split="test")
    assert len(rows) == 1 and rows[0].decoding["beam_size"] == 2
    assert rows[0].metrics["CIDEr-D"] == pytest.approx(official["CIDEr-D"], abs=1e-9)


def test_caption_command_on_generated_image(trained, tmp_path, capsys):
    spec = RunSpec.from_file(trained / "run.json")
    img = tmp_path / "x.png"
    load_split(spec, "test")[0].load_image().save(img)
    assert zoo_main(["caption", str(trained / "best.safetensors"), str(img), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["file"] == str(img) and len(out[0]["caption"].split()) >= 2
    rc = zoo_main(["caption", str(trained / "best.safetensors"), str(tmp_path / "missing.jpg")])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.jpg" in err and "Traceback" not in err


def test_resume_after_a_kill_gives_the_same_weights(cache_env, tmp_path):
    # gru-stacked with dropout: the RNG state must be restored too, not only weights and optimiser
    spec = shapes_spec("gru-stacked", steps=40, checkpoint_every=10, eval_every=1000, log_every=5)
    spec.decoder_kwargs["dropout"] = 0.3
    spec.data_options = {"num_train": 300, "num_val": 10, "num_test": 10}  # 23 steps per epoch
    spec.val_split = None
    straight = tmp_path / "straight"
    execute(spec, straight, progress=False)
    killed = tmp_path / "killed"
    execute(spec, killed, progress=False, stop_after=27)  # dies in epoch 2; last state at step 20
    assert not (killed / "last.safetensors").exists()
    with pytest.raises(zoo.ZooError, match="--resume"):
        execute(spec, killed, progress=False)  # refuses to overwrite a run by accident
    changed = RunSpec(**{**json.loads(spec.to_json()), "decoder_kwargs": {**spec.decoder_kwargs, "hidden_size": 64}})
    with pytest.raises(zoo.ZooError, match="decoder.hidden_size"):
        execute(changed, killed, resume=True, progress=False)  # the saved state has other shapes
    execute(spec, killed, resume=True, progress=False)
    logged = [json.loads(line)["step"] for line in (killed / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(5, 45, 5))  # steps 25 (logged before the kill, redone after) once
    a = load_file(str(straight / "last.safetensors"))
    b = load_file(str(killed / "last.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_train_command_errors_are_clear(capsys, tmp_path):
    rc = zoo_main(["train", "--encoder", "resnet10t", "--decoder", "gru-atn", "--tokenizer", "word",
                   "--out", str(tmp_path / "x"), "--set", "train.steps=1"])
    assert rc == 2 and "gru-attn" in capsys.readouterr().err
    rc = zoo_main(["train", "--encoder", "resnet10t", "--decoder", "gru", "--tokenizer", "word",
                   "--out", str(tmp_path / "y"), "--set", "train.stpes=1"])
    assert rc == 2 and "train.stpes" in capsys.readouterr().err
    rc = zoo_main(["train", "--resume", str(tmp_path / "nothing")])
    assert rc == 2 and "run.json" in capsys.readouterr().err
    rc = zoo_main(["train", "--encoder", "resnet10t", "--decoder", "gru", "--tokenizer", "word",
                   "--out", str(tmp_path / "z"), "--set", "train.steps=abc"])
    assert rc == 2 and "train.steps must be an integer" in capsys.readouterr().err


def test_training_settings_take_their_declared_types():
    """``--set train.lr=1e-3`` arrives as the string '1e-3' (YAML 1.1); it must become a float, not
    fail deep inside the schedule."""
    from zoo.training.config import TrainConfig

    cfg = TrainConfig.from_dict({"lr": "1e-3", "steps": 10.0, "eval_every": None, "amp": False})
    assert cfg.lr == 1e-3 and cfg.steps == 10 and isinstance(cfg.steps, int) and cfg.amp is False
    for bad, named in [({"steps": 1.5}, "train.steps"), ({"amp": "yes"}, "train.amp"), ({"lr": None}, "train.lr")]:
        with pytest.raises(zoo.ZooError, match=named):
            TrainConfig.from_dict(bad)


def test_fine_tuned_encoder_trains_with_images_in_the_loop(cache_env, tmp_path):
    spec = shapes_spec("gru", steps=6, eval_every=1000)
    spec.encoder_kwargs = {"img_size": 32}  # not frozen: no feature cache, the encoder learns too
    spec.data_options = {"num_train": 60, "num_val": 10, "num_test": 10, "image_size": 32}
    spec.val_split = None
    torch.manual_seed(0)
    before = build_model(spec, load_split(spec, "train"))
    result = execute(spec, tmp_path / "ft", progress=False)
    after = zoo.load(tmp_path / "ft" / "last.safetensors")
    assert not after.encoder.frozen
    changed = [k for k, v in before.encoder.state_dict().items() if not torch.equal(v, after.encoder.state_dict()[k])]
    assert any("weight" in k and "conv" in k for k in changed)  # backbone weights were updated
    assert result.steps == 6 and not any((tmp_path / "ft").glob("*cache*"))


def test_eval_on_own_folder_with_a_bad_image(trained, tmp_path, capsys):
    spec = RunSpec.from_file(trained / "run.json")
    folder = tmp_path / "photos"
    folder.mkdir()
    lines = []
    for i, item in enumerate(load_split(spec, "test")[:4]):
        item.load_image().save(folder / f"img{i}.png")
        lines.append(json.dumps({"file": f"img{i}.png", "captions": item.captions}))
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    lines.append(json.dumps({"file": "broken.jpg", "caption": "a red circle"}))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    args = ["eval", str(trained), "--data", "folder", "--data-root", str(folder), "--split", "all",
            "--metrics", "cider-d", "--no-record", "--no-progress", "--out", str(tmp_path / "ev")]
    rc = zoo_main(args)
    err = capsys.readouterr().err
    assert rc == 2 and "broken.jpg" in err and "Traceback" not in err
    import warnings

    with warnings.catch_warnings():  # 4 images: CIDEr-D document frequencies from those references
        warnings.simplefilter("ignore")  # `zoo eval` says so in a note under the scores
        rc = zoo_main(args + ["--skip-bad-images"])
    out = capsys.readouterr().out
    assert rc == 0 and "1 bad images skipped" in out and "only 4 images scored" in out
    metrics = json.loads((tmp_path / "ev" / "metrics_folder_all_beam3.json").read_text())
    assert metrics["num_images"] == 4


# -- bad settings, damaged states, finished runs, short runs ------------------------------------------------
def tiny_spec(steps: int = 2) -> RunSpec:
    spec = shapes_spec("gru", steps=steps, eval_every=1000, log_every=1)
    spec.encoder_kwargs = {"img_size": 32, "freeze": True}
    spec.decoder_kwargs = {"embed_size": 8, "hidden_size": 16}
    spec.data_options = {"num_train": 40, "num_val": 4, "num_test": 4, "image_size": 32}
    spec.train["batch_size"] = 8
    spec.val_split = None
    return spec


@pytest.mark.parametrize(
    "setting, allowed",
    [
        ("batch_size=0", r"train.batch_size must be an integer ≥ 1, got 0 \(default 64\)"),
        ("lr=-1", r"train.lr must be a number > 0.*got -1 \(default 0.0005\)"),
        ("cache_dtype=int8", r"train.cache_dtype must be float32 or float16.*got 'int8' \(default 'float32'\)"),
        ("steps=0", r"train.steps must be an integer ≥ 1.*got 0 \(default None\)"),
        ("steps=-3", r"train.steps must be an integer ≥ 1.*got -3"),
        ("epochs=0", r"train.epochs must be an integer ≥ 1"),
        ("label_smoothing=1.5", r"train.label_smoothing must be a number from 0.*1.*got 1.5 \(default 0.0\)"),
        ("log_every=0", r"train.log_every must be an integer ≥ 1"),
        ("device=gpu", r"train.device must be auto, cpu, cuda, cuda:N or mps, got 'gpu' \(default 'auto'"),
    ],
)
def test_bad_training_settings_fail_before_training_naming_the_setting(cache_env, tmp_path, capsys, setting, allowed):
    import re

    out = tmp_path / "run"
    rc = zoo_main(["train", "--encoder", "resnet10t", "--decoder", "gru", "--tokenizer", "word", "--freeze",
                   "--val-split", "none", "--set", "data.num_train=16", "--set", "train.steps=2",
                   "--set", f"train.{setting}", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert re.search(allowed, err), err
    assert not (out / "state.safetensors").exists() and not (out / "last.safetensors").exists()


def test_cuda_device_without_cuda_says_so_and_what_to_use(monkeypatch):
    from zoo.training.config import TrainConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0"):
        with pytest.raises(zoo.ZooError, match=r"train.device=cuda.*CUDA is not available here.*train.device=cpu.*auto"):
            TrainConfig.from_dict({"device": device})
    assert TrainConfig.from_dict({"device": "auto"}).device == "auto"
    assert TrainConfig.from_dict({"device": "cpu"}).device == "cpu"


def test_short_run_reaches_its_learning_rate_and_long_runs_are_unchanged():
    """The warm-up is at most a tenth of the run: a 30-step trial with the default 100-step warm-up still
    reaches train.lr; a run of 1,000 steps or more (the demo's 1,200) keeps the schedule it always had."""
    import math

    from zoo.training.config import TrainConfig
    from zoo.training.schedule import lr_at

    cfg = TrainConfig(lr=1e-3)  # default warmup_steps=100
    short = [lr_at(s, cfg, 30) for s in range(30)]
    assert max(short) == pytest.approx(1e-3) and short[2] == pytest.approx(1e-3)  # warm-up of 3 steps
    assert short[0] < short[1] < short[2] and short[-1] < 0.01 * 1e-3

    def unclamped(step: int, total: int, warm: int = 100) -> float:
        if step < warm:
            return cfg.lr * (step + 1) / warm
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min((step - warm) / (total - warm), 1.0)))

    for total in (1000, 1200, 5000):
        assert [lr_at(s, cfg, total) for s in range(total)] == [unclamped(s, total) for s in range(total)]


def test_resuming_from_a_damaged_state_says_what_to_do(cache_env, tmp_path, capsys):
    run = tmp_path / "run"
    execute(tiny_spec(), run, progress=False)
    data = (run / "state.safetensors").read_bytes()
    for damaged in (data[: len(data) // 2], data[:100], b""):
        (run / "state.safetensors").write_bytes(damaged)
        rc = zoo_main(["train", "--resume", str(run), "--set", "train.steps=4", "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err
        assert str(run / "state.safetensors") in err and "damaged" in err
        assert "atomically" in err and "earlier copy" in err and "start the run again" in err
        assert "best.safetensors" in err and "last.safetensors" in err
        with pytest.raises(zoo.errors.CheckpointError):
            execute(RunSpec.from_file(run / "run.json"), run, resume=True, progress=False)


def test_resuming_a_finished_run_changes_nothing_and_says_so(cache_env, tmp_path, capsys):
    run = tmp_path / "run"
    execute(tiny_spec(steps=3), run, progress=False)
    before = {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in run.iterdir()}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_loss"] is not None and summary["train_images_per_s"] is not None
    for extra in ([], ["--set", "train.steps=2"]):
        rc = zoo_main(["train", "--resume", str(run), "--no-progress", *extra])
        captured = capsys.readouterr()
        assert rc == 0
        assert "already complete at step 3" in captured.err and "--set train.steps=M" in captured.err
        printed = json.loads(captured.out.strip().splitlines()[-1])
        assert printed["steps"] == 3 and printed["final_loss"] == summary["final_loss"]
        after = {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in run.iterdir()}
        assert after == before
    # asking for more steps trains on
    rc = zoo_main(["train", "--resume", str(run), "--no-progress", "--set", "train.steps=4"])
    capsys.readouterr()
    assert rc == 0 and json.loads((run / "summary.json").read_text())["steps"] == 4


@pytest.mark.java
def test_eval_with_sampling_and_constraints_records_every_setting(trained, tmp_path, capsys):
    """Sampling, n per image and constraints from the command line reach the metrics JSON, the file
    names, the results row (decoding, objective, caption statistics) and the leaderboard."""
    from zoo.results.leaderboard import build_leaderboard
    from zoo.results.database import ResultsDB

    db, out = tmp_path / "results.sqlite", tmp_path / "ev"
    common = ["--split", "test", "--out", str(out), "--db", str(db), "--metrics", "cider-d", "--no-progress",
              "--report-images", "0"]
    assert zoo_main(["eval", str(trained), *common, "--beam", "2"]) == 0
    assert zoo_main(["eval", str(trained), *common, "--sample", "--temperature", "0.7", "-n", "3",
                     "--no-repeat-ngram", "3", "--bad-endings", "--sample-seed", "4"]) == 0
    printed = capsys.readouterr().out
    assert "sampling (T=0.7, seed 4), n 3" in printed and "caption statistics (not metrics): bad endings" in printed
    tag = "shapes_test_sample_t0.7_n3_seed4_norep3_nobad"
    metrics = json.loads((out / f"metrics_{tag}.json").read_text())
    want = {"sample": True, "max_len": 20, "temperature": 0.7, "top_k": 0, "top_p": 1.0, "n": 3, "seed": 4,
            "length_penalty": 1.0, "no_repeat_ngram": 3, "bad_endings": True}
    assert metrics["decoding"] == want
    stats = metrics["caption_stats"]
    assert stats["bad_ending_share"] == 0.0 and stats["mean_length"] > 2 and stats["vocabulary"] > 3
    assert 0.0 <= stats["copied_share"] <= 1.0  # from the shapes train split
    samples = json.loads((out / f"samples_{tag}.json").read_text())
    assert len(samples) == SHAPES["num_test"] and all(len(s["captions"]) == 3 for s in samples)
    with ResultsDB(db) as rdb:
        rows = rdb.rows(data="shapes", split="test")
    assert [r.decoding for r in rows] == [{"beam_size": 2, "max_len": 20, "length_penalty": 1.0}, want]
    assert [r.objective for r in rows] == ["xe", "xe"]
    assert rows[1].extra["caption_stats"] == stats and "caption_stats" not in rows[1].metrics
    lb = build_leaderboard(rows)
    assert "sample" in lb.varying_decoding and "no_repeat_ngram" in lb.varying_decoding
    table = lb.to_table()
    assert "temperature=0.7" in table and "bad_endings=True" in table


def test_eval_refuses_bad_decoding_flags_before_loading(tmp_path, capsys):
    for argv, flag in ((["--sample", "--top-p", "0"], "--top-p"), (["-n", "2"], "-n/--num"),
                       (["--beam", "2", "--sample"], "--beam and --sample"),
                       (["--min-len", "30"], "--min-len")):
        rc = zoo_main(["eval", str(tmp_path / "missing.safetensors"), *argv])
        assert rc != 0
        err = capsys.readouterr().err
        assert flag in err and "Traceback" not in err and "does not exist" not in err
