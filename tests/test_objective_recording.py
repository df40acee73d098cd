"""How a model was trained reaches the results: the objective signature is a real results column (schema
migration from version 2), XE and SCST versions of one architecture are separate leaderboard systems with
an objective column, and ``zoo info CHECKPOINT`` shows it."""

from __future__ import annotations

import json
import sqlite3

import zoo
from zoo.models.checkpoint import objective_signature
from zoo.cli import main as zoo_main
from zoo.results.leaderboard import build_leaderboard
from zoo.results.database import ResultsDB
from tests.helpers import tiny_model
from tests.test_leaderboard import run

SCST = "scst(cider-d, baseline=mean, n=5, df=train, eos=yes)"


def test_signature_from_checkpoint_extra() -> None:
    assert objective_signature({}) == "xe"
    assert objective_signature({"objective": {"name": "scst", "options": {}, "signature": SCST}}) == SCST


def test_objective_column_and_migration_from_version_2(tmp_path) -> None:
    path = tmp_path / "r.sqlite"
    with ResultsDB(path) as db:
        assert db.schema_version == 3
        db.record(run("gru", objective=SCST))
        db.record(run("gru"))
    with ResultsDB(path) as db:
        assert [r.objective for r in db.rows()] == [SCST, "xe"]
        assert [r.objective for r in db.rows(objective="xe")] == ["xe"]
    # a version-2 file (no objective column) is migrated; its rows were trained with cross-entropy
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM evaluations WHERE objective != 'xe'")
    conn.execute("ALTER TABLE evaluations DROP COLUMN objective")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with ResultsDB(path) as db:
        assert db.schema_version == 3 and [r.objective for r in db.rows()] == ["xe"]


def test_xe_and_scst_of_one_architecture_are_separate_systems() -> None:
    rows = [run("gru-attn", seed=0), run("gru-attn", shift=0.2, seed=0, objective=SCST, checkpoint_sha256="b")]
    lb = build_leaderboard(rows)
    assert len(lb.rows) == 2 and lb.varying_objective
    assert sorted(b.name for b in lb.rows) == ["gru-attn (scst)", "gru-attn (xe)"]
    table = lb.to_table()
    assert "objective" in table.splitlines()[1] and SCST in table
    assert {r["objective"] for r in json.loads(lb.to_json())["rows"]} == {"xe", SCST}
    assert not build_leaderboard([run("a"), run("b")]).varying_objective


def test_zoo_info_of_a_checkpoint_shows_its_objective(tmp_path, capsys) -> None:
    model = tiny_model("gru")
    plain = zoo.save(model, tmp_path / "xe.safetensors")
    scst = zoo.save(model, tmp_path / "scst.safetensors",
                    extra={"objective": {"name": "scst", "options": {"sample_n": 5}, "signature": SCST}})
    assert zoo_main(["info", str(plain)]) == 0
    assert "objective: xe" in capsys.readouterr().out
    assert zoo_main(["info", str(scst)]) == 0
    out = capsys.readouterr().out
    assert f"objective: {SCST}" in out and "decoder: gru" in out
