"""Full disks and damaged files around an evaluation and the results database (issue 17, items 1, 6, 7):
a file that cannot be written after scoring never costs the database row, and every message says what
was kept and what was not. Real full disks: a small tmpfs (``small_disk``), skipped where it cannot mount."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

import zoo
from zoo.cli import main
from zoo.errors import ResultsDBError
from zoo.results.database import ResultsDB, check_writable

from .helpers import fill_disk, tiny_model
from .test_results_db import make_record

SHAPES = ["--data", "shapes", "--split", "test", "--set", "data.num_train=4", "--set", "data.num_val=2",
          "--set", "data.num_test=6", "--set", "data.image_size=32", "--no-progress", "--metrics", "cider-d"]


@pytest.fixture
def checkpoint(tmp_path):
    return zoo.save(tiny_model(), tmp_path / "ckpt" / "tiny.safetensors")


def _eval(capsys, *args):
    rc = main(["eval", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return rc, out, err


def _rows(db):
    with ResultsDB(db) as d:
        rows = d.rows()
        images = d.images(rows[0].references_hash) if rows else {}
    return rows, images


@pytest.mark.java
@pytest.mark.parametrize("room", ["none", "json only"])
def test_a_full_disk_after_scoring_keeps_the_row_and_says_what_was_not_written(capsys, tmp_path, checkpoint,
                                                                               small_disk, room):
    if shutil.which("java") is None:
        pytest.skip("needs Java for the PTB tokenizer (a recorded row is scored with the official protocol)")
    # what the files weigh, written where there is room
    rc, _, err = _eval(capsys, checkpoint, *SHAPES, "--out", tmp_path / "roomy", "--no-record")
    assert rc == 0, err
    sizes = {p.name.split("_")[0]: p.stat().st_size for p in (tmp_path / "roomy").iterdir()}
    page = 4096
    json_pages = sum(-(-sizes[k] // page) * page for k in ("results", "references", "metrics"))
    assert sizes["report"] > 2 * page  # the report cannot fit in the room left below
    out = small_disk(1 << 20)
    fill_disk(out, leave=0 if room == "none" else json_pages + page)
    db = tmp_path / "results.sqlite"

    rc, stdout, err = _eval(capsys, checkpoint, *SHAPES, "--out", out, "--db", db)

    assert "Traceback" not in err and "CIDEr-D" in stdout  # the scores are shown
    assert rc == 1, err  # scored and recorded, files missing: not 0, and not 2 (nothing done)
    rows, images = _rows(db)
    assert len(rows) == 1 and rows[0].metrics["CIDEr-D"] >= 0  # the row survived the full disk
    assert sum(t is not None for _, t in images.values()) == 6  # so did the thumbnails (made before writing)
    assert f"Recorded: row {rows[0].id}" in err and "NOT written" in err and "No space left on device" in err
    assert "report_shapes_test_beam3.html" in err.split("NOT written")[1]
    if room == "none":
        assert "results_shapes_test_beam3.json" in err.split("NOT written")[1] and "No file was written" in err
    else:
        assert "Written: " in err and "metrics_shapes_test_beam3.json" in err.split("NOT written")[0]
        assert (out / "metrics_shapes_test_beam3.json").exists()
    assert not list(out.glob(".*.tmp"))  # no temporary file left on the full disk


def test_a_row_committed_on_a_full_disk_is_said_to_be_recorded(tmp_path, small_disk):
    """The row fits, the thumbnails (drill-down) do not: the row stays, and ``ev.not_written`` says what
    was not stored, instead of an error that reads as "nothing recorded"."""
    from zoo.evaluation.model_eval import evaluate_model
    from zoo.results.record import record
    from zoo.training.runs import RunSpec, load_split

    spec = RunSpec("resnet10t", "gru", "word", "shapes",
                   data_options={"num_train": 4, "num_val": 2, "num_test": 4, "image_size": 32})
    model = tiny_model()
    ev = evaluate_model(model, load_split(spec, "test"), metrics=("cider-d",), tokenize=False, progress=False,
                        beam_size=1)
    ev.thumbnails = {str(k): os.urandom(300_000) for k in ev.captions}  # 1.2 MB: more than the disk holds
    disk = small_disk(1 << 20)
    db = disk / "results.sqlite"
    check_writable(db)  # the pre-check passes: there is room for a row

    row = record(ev, model, db)

    assert row == 1 and ev.record_id == 1
    (what, why), = ev.not_written.items()
    assert "4 thumbnail(s) of row 1" in what and "full" in why, (what, why)
    shutil.copy(db, tmp_path / "copy.sqlite")  # read it where there is room (the WAL may hold the row)
    for suffix in ("-wal",):
        if (disk / f"results.sqlite{suffix}").exists():
            shutil.copy(disk / f"results.sqlite{suffix}", tmp_path / f"copy.sqlite{suffix}")
    rows, images = _rows(tmp_path / "copy.sqlite")
    assert [r.id for r in rows] == [1]
    # the reference captions (small) were stored without the thumbnails (large) that did not fit
    assert len(images) == 4 and all(refs and thumb is None for refs, thumb in images.values())
    assert "reference captions" not in what


def test_the_pre_check_on_a_full_disk_says_the_disk_is_full(small_disk):
    disk = small_disk(512 * 1024)
    with ResultsDB(disk / "r.sqlite") as db:
        db.record(make_record())
    fill_disk(disk)
    for path in (disk / "r.sqlite", disk / "new.sqlite"):  # an existing database, and one to create
        with pytest.raises(ResultsDBError) as err:
            check_writable(path)
        msg = str(err.value)
        assert "is full" in msg and str(path) in msg and "Free some space" in msg, msg


def test_a_half_truncated_database_is_called_damaged_with_a_way_to_recover(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultsDB(path) as db:
        for seed in range(40):
            db.record(make_record(seed=seed, per_image_cider={str(i): 1.0 for i in range(300)}))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(ResultsDBError) as err:
        with ResultsDB(path) as db:
            db.rows()
    msg = str(err.value)
    assert "damaged" in msg and str(path) in msg and ".recover" in msg and "backup" in msg, msg
    assert "not an SQLite" not in msg


def test_a_symlink_loop_is_called_a_loop_not_missing(tmp_path, capsys):
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    a.symlink_to(b)
    b.symlink_to(a)
    for create in (True, False):
        with pytest.raises(ResultsDBError) as err:
            ResultsDB(a, create=create)
        assert "symbolic link loop" in str(err.value) and str(a) in str(err.value), err.value
    assert main(["leaderboard", "--db", str(a)]) == 2
    assert "symbolic link loop" in capsys.readouterr().err
