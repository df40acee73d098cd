"""The results database: round trips, concurrent writers, schema versions, foreign files, bad rows."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

import zoo.results.database as results
from zoo.errors import ResultsDBError
from zoo.results.database import ResultsDB
from zoo.results.evalrecord import EvalRecord
from zoo.results.provenance import config_hash, environment_info, references_hash


def make_record(**kw) -> EvalRecord:
    per_image = kw.pop("per_image_cider", {"1": 0.5, "2": 1.0, "3": 1.5})
    base = dict(
        system="resnet10t+gru+word",
        encoder="resnet10t",
        decoder="gru",
        tokenizer="word",
        encoder_options={"freeze": True},
        decoder_options={"hidden_size": 64},
        tokenizer_options={"min_count": 1},
        config_hash=config_hash({"decoder": "gru"}),
        params_encoder=4_900_000,
        params_decoder=120_000,
        data="shapes",
        split="test",
        num_images=len(per_image),
        references_hash="ab" * 32,
        decoding={"beam_size": 3, "max_len": 20, "length_penalty": 1.0},
        metrics={"BLEU-4": 0.31, "METEOR": 0.25, "ROUGE-L": 0.52, "CIDEr-D": sum(per_image.values()) / len(per_image)},
        per_image_cider=per_image,
        train_images_per_s=812.5,
        decode_images_per_s=301.0,
        device="cpu (test, 2 cores)",
        versions={"zoo": "0.1.0", "torch": "2.x", "timm": "1.x"},
        git_commit="0" * 40,
        seed=0,
        checkpoint_path="/tmp/m.safetensors",
        checkpoint_sha256="f" * 64,
    )
    base.update(kw)
    return EvalRecord(**base)


def test_record_round_trips_every_field(tmp_path):
    rec = make_record(run_name="first", extra={"note": "ünïcode ok"})
    with ResultsDB(tmp_path / "r.sqlite") as db:
        row_id = db.record(rec)
        (back,) = db.rows()
    assert back.id == row_id
    back.id = None
    assert back == rec


def test_reopening_keeps_rows_and_uses_wal(tmp_path):
    path = tmp_path / "sub" / "r.sqlite"  # the folder is created
    with ResultsDB(path) as db:
        db.record(make_record(seed=1))
        db.record(make_record(seed=2, split="val"))
    with ResultsDB(path) as db:
        assert db.schema_version == results.SCHEMA_VERSION
        assert [r.seed for r in db.rows()] == [1, 2]
        assert [r.seed for r in db.rows(data="shapes", split="val")] == [2]
        assert [r.seed for r in db.rows(seed=[1, 2], split="test")] == [1]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_unknown_filter_is_named(tmp_path):
    with ResultsDB(tmp_path / "r.sqlite") as db, pytest.raises(ResultsDBError, match="'colour'"):
        db.rows(colour="red")


def test_migrations_run_in_order_and_keep_rows(tmp_path, monkeypatch):
    """A database written at the current version is brought to a (pretend) next version on open, rows intact."""
    path = tmp_path / "r.sqlite"
    with ResultsDB(path) as db:
        db.record(make_record())
    v2 = ("ALTER TABLE evaluations ADD COLUMN reviewer TEXT", "UPDATE evaluations SET reviewer = 'nobody'")
    monkeypatch.setattr(results, "_MIGRATIONS", [*results._MIGRATIONS, v2])
    monkeypatch.setattr(results, "SCHEMA_VERSION", results.SCHEMA_VERSION + 1)
    with ResultsDB(path) as db:
        assert db.schema_version == results.SCHEMA_VERSION
        assert len(db.rows()) == 1
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT reviewer FROM evaluations").fetchall() == [("nobody",)]
    conn.close()


def test_newer_schema_is_refused_naming_file_and_versions(tmp_path):
    path = tmp_path / "future.sqlite"
    ResultsDB(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(ResultsDBError) as err:
        ResultsDB(path)
    msg = str(err.value)
    assert str(path) in msg and "99" in msg and f"up to {results.SCHEMA_VERSION}" in msg
    assert "Upgrade" in msg


def test_a_text_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("these are my notes, not a database\n" * 200)
    with pytest.raises(ResultsDBError) as err:
        ResultsDB(path)
    assert str(path) in str(err.value) and "not an SQLite" in str(err.value)
    assert path.read_text().startswith("these are my notes")  # untouched


def test_a_foreign_sqlite_database_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(ResultsDBError, match="not a caption-zoo results database"):
        ResultsDB(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    conn.close()


def test_missing_database_is_refused_when_not_creating(tmp_path):
    path = tmp_path / "nope.sqlite"
    with pytest.raises(ResultsDBError, match="zoo eval"):
        ResultsDB(path, create=False)
    assert not path.exists()


def test_default_location_honours_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(results.DB_ENV, str(tmp_path / "env.sqlite"))
    assert results.default_db_path() == tmp_path / "env.sqlite"
    with ResultsDB() as db:
        assert db.path == tmp_path / "env.sqlite"
    monkeypatch.delenv(results.DB_ENV)
    assert results.default_db_path() == Path(results.DEFAULT_DB).expanduser()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"metrics": {"CIDEr-D": 0.9, "BLEU-4": 31.0}}, "not ×100"),
        ({"metrics": {"CIDEr-D": float("nan")}}, "finite"),
        ({"num_images": 7}, "num_images is 7"),
        ({"per_image_cider": {1: 0.5}, "num_images": 1}, "str"),
        ({"decoding": {"beam_size": object()}}, "'decoding'"),
        ({"split": ""}, "'split'"),
    ],
)
def test_bad_rows_are_refused_before_writing(tmp_path, change, message):
    with ResultsDB(tmp_path / "r.sqlite") as db:
        with pytest.raises(ResultsDBError, match=message):
            db.record(make_record(**change))
        assert db.count() == 0


def _writer(path: str, start, worker: int) -> None:
    start.wait()  # both processes open (and create) the database and write at the same moment
    with ResultsDB(path) as db:
        for i in range(20):
            db.record(make_record(seed=i, run_name=f"w{worker}-{i}"))


def test_two_concurrent_writers_both_land(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(path, start, w)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    with ResultsDB(path) as db:
        names = sorted(r.run_name for r in db.rows())
    assert names == sorted(f"w{w}-{i}" for w in (0, 1) for i in range(20))


def test_hashes_are_canonical():
    refs = {1: ["a cat", "a red cat"], 2: ["two dogs"]}
    same = {2: ["two dogs"], 1: ["a red cat", "a cat"]}
    assert references_hash(refs) == references_hash(same)
    assert references_hash(refs) != references_hash({1: ["a cat", "a red cat"], 2: ["two dogs", "x"]})
    assert references_hash(refs) != references_hash({1: ["a cat", "a red cat"]})
    assert config_hash({"a": 1, "b": {"c": 2}}) == config_hash({"b": {"c": 2}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_environment_info_outside_a_repository(tmp_path):
    info = environment_info(device="cpu", cwd=tmp_path)
    assert info["git_commit"] is None
    assert info["versions"]["zoo"] and info["versions"]["torch"] and "timm" in info["versions"]
    assert info["device"].startswith("cpu")


def test_record_from_dict_refuses_unknown_keys():
    rec = make_record()
    assert EvalRecord.from_dict(rec.to_dict()) == rec
    with pytest.raises(ResultsDBError, match="'colour'"):
        EvalRecord.from_dict({**rec.to_dict(), "colour": "red"})


def test_none_filter_matches_unrecorded_values(tmp_path):
    with ResultsDB(tmp_path / "r.sqlite") as db:
        db.record(make_record(seed=None, run_name="unseeded"))
        db.record(make_record(seed=3))
        assert [r.run_name for r in db.rows(seed=None)] == ["unseeded"]


def test_equal_models_hash_equal_whether_defaults_were_spelled_out_or_not(tmp_path):
    """`--set decoder.dropout=0.3` (the default) and no --set build the same model: one system, not two."""
    from tests.helpers import tiny_model
    from zoo.results.leaderboard import build_leaderboard
    from zoo.evaluation.model_eval import ModelEvaluation
    from zoo.results.record import record

    implicit, explicit, other = tiny_model(), tiny_model(dropout=0.3), tiny_model(dropout=0.1)
    assert "dropout" not in implicit.config["decoder"]["kwargs"]  # as the user passed it
    assert config_hash(implicit.config) == config_hash(explicit.config)
    assert config_hash(implicit.config) != config_hash(other.config)
    assert config_hash({**implicit.config, "recipe": "some-recipe"}) == config_hash(implicit.config)

    db = tmp_path / "r.sqlite"
    per_image = {"1": 0.5, "2": 1.0, "3": 1.5}
    for seed, model in enumerate((implicit, explicit)):
        ev = ModelEvaluation(
            metrics={"CIDEr-D": 1.0}, per_image_cider=per_image, not_computed={}, captions={}, references={1: ["a"]},
            decoding={"beam_size": 3, "max_len": 20, "length_penalty": 1.0}, data="shapes", split="test",
            num_images=3, decode_images_per_s=10.0,
        )
        record(ev, model, db, seed=seed)
    with ResultsDB(db) as opened:
        rows = opened.rows()
    assert rows[0].config_hash == rows[1].config_hash
    assert rows[0].decoder_options["dropout"] == 0.3  # the options stored are the full ones that were hashed
    board = build_leaderboard(rows)
    assert len(board.rows) == 1 and board.rows[0].seeds == 2 and "#" not in board.rows[0].name
