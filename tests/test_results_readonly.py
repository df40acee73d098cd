"""A results database that cannot be written: `zoo eval` says so before decoding, in words that say what
to do, and `zoo leaderboard` still reads one that lies in a read-only folder.

Read-only is real here, not mocked: a non-root user gets a folder without write permission; root, whom
permissions do not stop, gets a read-only bind mount of the folder (skipped where mounting is not allowed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import tiny_model
from zoo.cli import main as zoo_main


@pytest.fixture
def read_only(tmp_path):
    """``(src, view)``: ``src`` is writable, ``view`` shows the same files read-only."""
    src = tmp_path / "src"
    src.mkdir()
    if os.geteuid() != 0:
        view = src
        src_mode = src.stat().st_mode
        yield src, view
        os.chmod(src, src_mode)
        return
    view = tmp_path / "view"
    view.mkdir()
    ok = subprocess.run(f"mount --bind '{src}' '{view}' && mount -o remount,ro,bind '{view}'", shell=True,
                        capture_output=True).returncode == 0
    if not ok:
        subprocess.run(["umount", str(view)], capture_output=True)
        pytest.skip("as root, a read-only folder needs a read-only bind mount, and mounting is not allowed here")
    try:
        yield src, view
    finally:
        if subprocess.run(["umount", str(view)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(view)], capture_output=True)


def _seal(src: Path, view: Path) -> None:
    """Make ``view`` read-only from now on (the non-root case: take write permission away)."""
    if src == view:
        os.chmod(src, 0o555)
        if os.access(src, os.W_OK):
            pytest.skip("this user can write a folder without write permission")


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    import zoo

    path = tmp_path / "model" / "tiny.safetensors"
    path.parent.mkdir()
    zoo.save(tiny_model(), path)
    return path


def _eval(checkpoint: Path, db: Path, out: Path) -> list[str]:
    return ["eval", str(checkpoint), "--data", "shapes", "--set", "data.num_test=4", "--set", "data.image_size=32",
            "--metrics", "cider-d", "--beam", "1", "--no-progress", "--db", str(db), "--out", str(out)]


def test_eval_into_a_read_only_folder_fails_before_decoding_saying_what_to_do(read_only, checkpoint, tmp_path, capsys):
    src, view = read_only
    _seal(src, view)
    out = tmp_path / "ev"
    rc = zoo_main(_eval(checkpoint, view / "results.sqlite", out))
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()  # refused before decoding: no captions were written
    assert "read-only" in err and "cannot write" in err and "--db" in err and "--no-record" in err, err
    assert "Traceback" not in err


def test_eval_into_a_file_that_is_not_a_database_fails_before_decoding(checkpoint, tmp_path, capsys):
    db = tmp_path / "notes.sqlite"
    db.write_text("these are my notes, not a database\n" * 200)
    out = tmp_path / "ev"
    rc = zoo_main(_eval(checkpoint, db, out))
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()  # refused before decoding
    assert "not an SQLite results database" in err and "--no-record" in err
    assert db.read_text().startswith("these are my notes")


def test_leaderboard_reads_a_database_in_a_read_only_folder(read_only, capsys):
    from tests.test_leaderboard import run
    from zoo.results.database import ResultsDB

    src, view = read_only
    with ResultsDB(src / "results.sqlite") as db:  # WAL mode: reading needs -shm, which cannot be made here
        assert db._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.record(run("gru", seed=1))
        db.record(run("gru-attn", shift=0.2, seed=1))
    _seal(src, view)
    rc = zoo_main(["leaderboard", "--db", str(view / "results.sqlite"), "--format", "csv"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "gru-attn" in captured.out and "gru," in captured.out
    assert sorted(p.name for p in src.iterdir()) == ["results.sqlite"]
    with ResultsDB(view / "results.sqlite", create=False) as db:
        assert db.read_only and db.count() == 2
        with pytest.raises(Exception, match="cannot write.*read-only.*--db"):
            db.check_writable()
