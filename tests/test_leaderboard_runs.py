"""Seeds on the leaderboard are independent training runs, told apart by what is inside each checkpoint
(its run id and training hash, copied into the row's ``extra``), not by the folder it was evaluated in."""

from __future__ import annotations

from tests.test_leaderboard import run
from zoo.results.leaderboard import build_leaderboard


def _board(*rows):
    for i, r in enumerate(rows, 1):
        r.id = i
    return build_leaderboard(list(rows))


def test_two_checkpoints_of_one_run_are_never_pooled_as_seeds_whatever_seeds_they_were_given():
    # best and last of one run, copied elsewhere and evaluated with --seed 1 and --seed 2
    best = run("gru", seed=1, checkpoint_sha256="a" * 64, checkpoint_path="/x/model.safetensors",
               extra={"run_id": "r1", "train_hash": "t"})
    last = run("gru", seed=2, shift=0.01, checkpoint_sha256="b" * 64, checkpoint_path="/y/model.safetensors",
               extra={"run_id": "r1", "train_hash": "t"})
    board = _board(best, last)
    assert [b.seeds for b in board.rows] == [1, 1]
    assert any("not averaged as seeds" in n for n in board.notes)


def test_runs_of_one_regime_are_seeds_and_other_regimes_are_other_systems():
    a = run("gru", seed=1, checkpoint_sha256="a" * 64, extra={"run_id": "r1", "train_hash": "t"})
    b = run("gru", seed=2, checkpoint_sha256="b" * 64, extra={"run_id": "r2", "train_hash": "t"})
    assert [r.seeds for r in _board(a, b).rows] == [2]
    longer = run("gru", seed=2, shift=0.1, checkpoint_sha256="c" * 64, extra={"run_id": "r3", "train_hash": "u"})
    board = _board(a, longer)
    assert [r.seeds for r in board.rows] == [1, 1]
    # told apart by what a person can read (their seeds) rather than the regimes' hashes, which the
    # identity still holds
    assert sorted(r.name for r in board.rows) == ["gru (seed 1)", "gru (seed 2)"]
    assert sorted(next(x for x in r.identity if x.startswith("training regime")) for r in board.rows) == [
        "training regime #t", "training regime #u"]


def test_rows_without_a_run_id_keep_the_old_grouping():
    a = run("gru", seed=1, checkpoint_sha256="a" * 64)
    b = run("gru", seed=2, checkpoint_sha256="b" * 64)
    assert [r.seeds for r in _board(a, b).rows] == [2]
