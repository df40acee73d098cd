"""What `zoo train` does with bad data and bad settings: a truncated JPEG is skipped when asked (counted,
named, recorded), a refused run leaves nothing behind, a resume of a run that never saved says so, a
checkpoint copied out of its run still knows its data set, and option typos read like ``train.*`` ones."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from zoo.cli import main as zoo_main

pytestmark = [pytest.mark.xdist_group("train")]

CAPTIONS = ["a red square", "a blue circle", "a green square on the left", "two red circles", "a blue star"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Eight small JPEGs with captions, one of them truncated half-way."""
    folder = tmp_path_factory.mktemp("photos")
    lines = []
    for i in range(8):
        colour = [(200, 30, 30), (30, 30, 200), (30, 160, 60), (220, 200, 0)][i % 4]
        buf = io.BytesIO()
        Image.new("RGB", (48, 48), colour).save(buf, "JPEG")
        data = buf.getvalue()
        if i == 5:
            data = data[: len(data) // 2]  # truncated: the header is fine, the pixel data is cut off
        (folder / f"img{i}.jpg").write_bytes(data)
        lines.append(json.dumps({"file": f"img{i}.jpg", "captions": CAPTIONS}))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module", autouse=True)
def feature_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ZOO_FEATURE_CACHE", str(tmp_path_factory.mktemp("features")))
    yield
    mp.undo()


def train_args(out: Path, *extra: str, root: Path | None = None) -> list[str]:
    data = ["--data", "folder", "--data-root", str(root), "--train-split", "all"] if root else \
        ["--set", "data.num_train=16", "--set", "data.image_size=32"]
    return ["train", "--encoder", "resnet10t", "--decoder", "gru", "--tokenizer", "word", "--freeze",
            "--val-split", "none", *data, "--set", "tokenizer.min_count=0", "--set", "encoder.img_size=32",
            "--set", "decoder.embed_size=8", "--set", "decoder.hidden_size=8", "--set", "train.steps=2",
            "--set", "train.batch_size=4", "--out", str(out), "--no-progress", *extra]


def test_a_truncated_jpeg_stops_training_naming_it_and_skip_bad_images_skips_it(photos, tmp_path, capsys):
    out = tmp_path / "run"
    rc = zoo_main(train_args(out, root=photos))
    err = capsys.readouterr().err
    assert rc == 2 and "img5.jpg" in err and "--skip-bad-images" in err and "Traceback" not in err
    assert not out.exists()  # the refused run left nothing behind

    rc = zoo_main(train_args(out, "--skip-bad-images", root=photos))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "1 bad image(s) skipped" in captured.err and "img5.jpg" in captured.err
    record = json.loads((out / "run.json").read_text())
    assert [Path(s["path"]).name for s in record["skipped_images"]] == ["img5.jpg"]
    assert record["train"]["skip_bad_images"] is True
    assert "truncated" in record["skipped_images"][0]["error"]

    # the run folder still reads as a run (resume, eval); a checkpoint copied out of it knows its data set
    copy = tmp_path / "elsewhere" / "model.safetensors"
    copy.parent.mkdir()
    shutil.copy(out / "last.safetensors", copy)
    rc = zoo_main(["eval", str(copy), "--split", "all", "--metrics", "cider-d", "--no-ptb", "--no-record",
                   "--skip-bad-images", "--beam", "1", "--no-progress", "--out", str(tmp_path / "ev")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "on folder/all: 7 images" in captured.out and "say which data set" not in captured.err


def test_a_refused_run_leaves_no_folder_and_the_same_out_then_trains(tmp_path, capsys):
    out = tmp_path / "run"
    for bad, said in [("decoder.hiden_size=8", "unknown option decoder.hiden_size; did you mean hidden_size?"),
                      ("encoder.img_sise=8", "unknown option encoder.img_sise; did you mean img_size?"),
                      ("tokenizer.min_cout=1", "unknown option tokenizer.min_cout; did you mean min_count?"),
                      ("train.steps=null", "say how long to train")]:
        rc = zoo_main(train_args(out, "--set", bad))
        err = capsys.readouterr().err
        assert rc == 2 and said in err and "unexpected keyword" not in err, err
        assert not out.exists(), bad
    rc = zoo_main(train_args(out, "--set", "decoder.hiden_size=8"))
    assert "takes: dropout, embed_size, hidden_size" in capsys.readouterr().err  # the valid options listed
    assert zoo_main(train_args(out)) == 0 and (out / "last.safetensors").exists()


def test_a_refused_run_in_an_existing_folder_removes_only_what_it_wrote(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    rc = zoo_main(train_args(out, "--set", "train.steps=null"))
    assert rc == 2 and "say how long" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_resuming_a_run_that_never_saved_a_state_says_so(tmp_path, capsys):
    from zoo.commands.train import spec_from_args
    from zoo.cli import build_parser

    out = tmp_path / "early"
    out.mkdir()
    spec = spec_from_args(build_parser().parse_args(train_args(out)))
    (out / "run.json").write_text(spec.to_json())  # killed before its first checkpoint
    rc = zoo_main(["train", "--resume", str(out), "--set", "decoder.hidden_size=16"])
    err = capsys.readouterr().err
    assert rc == 2 and "no saved training state" in err and "changed" not in err
    assert f"--out {out}" in err


def test_best_and_last_of_one_run_copied_elsewhere_are_not_pooled_as_seeds(tmp_path, capsys):
    from zoo.models.checkpoint import read_extra
    from zoo.results.database import ResultsDB

    out = tmp_path / "run"
    assert zoo_main(train_args(out)) == 0
    assert zoo_main(["train", "--resume", str(out), "--set", "train.steps=3", "--no-progress"]) == 0
    ids = {read_extra(out / name)["run"]["id"] for name in ("best.safetensors", "last.safetensors")}
    assert len(ids) == 1  # one run, one id, across the resume
    hashes = {read_extra(out / name)["run"]["train_hash"] for name in ("best.safetensors", "last.safetensors")}
    assert len(hashes) == 1
    capsys.readouterr()
    db = tmp_path / "results.sqlite"
    for name in ("best", "last"):
        copy = tmp_path / f"copied-{name}" / "model.safetensors"  # no run.json beside it
        copy.parent.mkdir()
        shutil.copy(out / f"{name}.safetensors", copy)
        rc = zoo_main(["eval", str(copy), "--set", "data.num_test=6", "--metrics", "cider-d", "--beam", "1",
                       "--no-progress", "--db", str(db), "--out", str(tmp_path / f"ev-{name}")])
        assert rc == 0, capsys.readouterr().err
    with ResultsDB(db) as rdb:
        rows = rdb.rows()
    assert [r.extra.get("run_id") for r in rows] == [ids.pop()] * 2
    assert all(r.seed == 0 for r in rows)  # the seed, too, comes from inside the checkpoint
    capsys.readouterr()
    assert zoo_main(["leaderboard", "--db", str(db), "--format", "json"]) == 0
    board = json.loads(capsys.readouterr().out)
    assert [row["seeds"] for row in board["rows"]] == [1, 1]
