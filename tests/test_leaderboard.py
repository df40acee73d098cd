"""The paired bootstrap, ranking and its refusals, exports, the plot and ``zoo leaderboard``."""

from __future__ import annotations

import csv
import io
import json
import re
import zlib

import numpy as np
import pytest

import zoo.evaluation.bootstrap as stats
from tests.pages import SCST, crowded_rows
from zoo.cli import main
from zoo.errors import ZooError
from zoo.results.leaderboard import build_leaderboard
from zoo.results.database import ResultsDB
from zoo.results.evalrecord import EvalRecord
from zoo.results.provenance import config_hash
from zoo.views.leaderboard import _LABEL_GID, figure
from zoo.views.leaderboard_columns import NOT_SIGNIFICANT

N = 400
_rng = np.random.default_rng(123)
BASE = 0.5 + _rng.gamma(2.0, 0.45, N)  # CIDEr-D-like per-image scores: skewed, away from 0 (no clipping)


def run(name: str, shift: float = 0.0, seed: int = 0, noise: float = 0.05, **kw) -> EvalRecord:
    """A recorded evaluation whose per-image CIDEr-D is BASE + shift + zero-mean noise, so its mean is
    exactly BASE's mean + shift (the noise is drawn from the name and seed)."""
    rng = np.random.default_rng(zlib.crc32(f"{name}/{seed}".encode()))
    eps = rng.normal(0, noise, N)
    scores = BASE + shift + eps - eps.mean()
    per_image = {str(i): float(v) for i, v in enumerate(scores)}
    fields = dict(
        system=name,
        encoder="resnet10t",
        decoder=name,
        tokenizer="word",
        config_hash=config_hash({"system": name}),
        params_encoder=5_000_000,
        params_decoder=1_000_000 + 100_000 * len(name),
        data="shapes",
        split="test",
        num_images=N,
        references_hash="ab" * 32,
        decoding={"beam_size": 3, "max_len": 20},
        metrics={"CIDEr-D": float(scores.mean()), "BLEU-4": 0.3 + shift / 10, "METEOR": 0.25, "ROUGE-L": 0.5},
        per_image_cider=per_image,
        decode_images_per_s=100.0 + len(name),
        seed=seed,
    )
    fields.update(kw)
    return EvalRecord(**fields)


# -- the bootstrap on constructed scores ------------------------------------------------------------------
def test_a_known_difference_is_found_significant():
    rng = np.random.default_rng(0)
    a = rng.gamma(2.0, 0.45, 500)
    b = a + 0.05 + rng.normal(0, 0.1, 500)
    mean, lo, hi = stats.paired_bootstrap(b, a, resamples=1000, seed=0)
    assert mean == pytest.approx(float((b - a).mean()))
    assert 0 < lo < 0.05 < hi
    assert stats.is_significant(lo, hi)
    mean2, lo2, hi2 = stats.paired_bootstrap(a, b, resamples=1000, seed=0)  # the sign follows the order
    assert mean2 == pytest.approx(-mean) and hi2 < 0


def test_identical_systems_are_not_significant():
    a = np.random.default_rng(1).gamma(2.0, 0.45, 500)
    mean, lo, hi = stats.paired_bootstrap(a, a.copy(), resamples=1000)
    assert mean == 0 and lo <= 0 <= hi
    assert not stats.is_significant(lo, hi)


def test_noisy_systems_with_equal_means_are_not_significant():
    rng = np.random.default_rng(2)
    a = rng.gamma(2.0, 0.45, 500)
    eps = rng.normal(0, 0.1, 500)
    b = a + eps - eps.mean()  # per-image differences, but none on average
    mean, lo, hi = stats.paired_bootstrap(b, a, resamples=2000, seed=3)
    assert mean == pytest.approx(0, abs=1e-12) and lo < 0 < hi
    assert hi - lo == pytest.approx(2 * 1.96 * eps.std() / np.sqrt(500), rel=0.15)  # ≈ the normal-theory width


def test_bootstrap_is_deterministic_and_chunking_agrees(monkeypatch):
    rng = np.random.default_rng(4)
    a, b = rng.normal(1, 0.3, 300), rng.normal(1.02, 0.3, 300)
    first = stats.paired_bootstrap(a, b, resamples=3000, seed=7)
    assert stats.paired_bootstrap(a, b, resamples=3000, seed=7) == first
    monkeypatch.setattr(stats, "_MAX_INDEX_ENTRIES", 300 * 100)  # 30 chunks instead of one matrix
    chunked = stats.paired_bootstrap(a, b, resamples=3000, seed=7)
    assert chunked[0] == first[0]
    assert chunked[1] == pytest.approx(first[1], abs=0.01) and chunked[2] == pytest.approx(first[2], abs=0.01)


def test_bootstrap_refuses_misaligned_input():
    with pytest.raises(ZooError, match="equal length"):
        stats.paired_bootstrap(np.ones(5), np.ones(6))


def test_mean_std_over_seeds():
    assert stats.mean_std([1.0]) == (1.0, 0.0)
    mean, std = stats.mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(1.0)  # sample std (ddof=1)


# -- ranking --------------------------------------------------------------------------------------------
def test_ranking_intervals_and_markers():
    rows = [run("gru"), run("gru-attn", shift=0.08), run("lstm", shift=0.07, noise=0.3), run("tiny", shift=-0.2)]
    lb = build_leaderboard(rows, resamples=1000)
    assert [b.name for b in lb.rows] == ["gru-attn", "lstm", "gru", "tiny"]
    leader, lstm, gru, tiny = lb.rows
    assert leader.rank == 1 and leader.delta is None
    assert lstm.significant is False and lstm.delta[1] < 0 < lstm.delta[2]
    assert gru.significant is True and gru.delta[2] < 0
    assert gru.delta[0] == pytest.approx(gru.metrics["CIDEr-D"] - leader.metrics["CIDEr-D"])
    table = lb.to_table().splitlines()
    row_of = {name: next(line for line in table if f" {name} " in line) for name in ("gru-attn", "lstm", "gru")}
    assert "—" in row_of["gru-attn"]
    assert NOT_SIGNIFICANT in row_of["lstm"]
    assert NOT_SIGNIFICANT not in row_of["gru"]
    assert "CIDEr-D ×100" in table[1] and "params (M)" in table[1] and "decode img/s" in table[1]


def test_mixed_splits_are_refused_with_the_groups_and_what_to_do():
    rows = [run("gru"), run("gru-attn", split="val"), run("lstm", data="coco-karpathy")]
    with pytest.raises(ZooError) as err:
        build_leaderboard(rows)
    msg = str(err.value)
    assert "split=val" in msg and "split=test" in msg and "data=coco-karpathy" in msg
    assert "--data" in msg and "--split" in msg


def test_different_reference_sets_are_refused():
    rows = [run("gru"), run("gru-attn", references_hash="cd" * 32)]
    with pytest.raises(ZooError, match="--references"):
        build_leaderboard(rows)


def test_seeds_are_aggregated_and_reevaluations_not_double_counted():
    rows = [run("gru", seed=0), run("gru", seed=1), run("gru", seed=2), run("gru", seed=2), run("lstm", shift=-0.3)]
    lb = build_leaderboard(rows)
    gru = lb.rows[0]
    assert gru.seeds == 3
    values = [r.metrics["CIDEr-D"] for r in rows[:3]]
    assert gru.metrics["CIDEr-D"] == pytest.approx(np.mean(values))
    assert gru.metrics_std["CIDEr-D"] == pytest.approx(np.std(values, ddof=1))
    assert "±" in lb.to_table().splitlines()[3]
    assert any("same seed ignored" in n for n in lb.notes)
    # per-run view keeps every row
    assert len(build_leaderboard(rows, group_by="run").rows) == 5


def _ckpt(name: str, seed: int, file: str, folder: str = "runs/a", shift: float = 0.0, **kw) -> EvalRecord:
    """A run of ``name`` evaluated from ``folder/file`` (its sha256 follows folder, file and seed)."""
    sha = f"{zlib.crc32(f'{folder}/{file}/{seed}'.encode()):08x}" * 8
    return run(name, shift=shift, seed=seed, checkpoint_path=f"{folder}-s{seed}/{file}", checkpoint_sha256=sha,
               run_name=f"{folder}-s{seed}", **kw)


def test_checkpoints_sharing_a_seed_are_not_collapsed():
    rows = [
        _ckpt("gru", 0, "best.safetensors", shift=0.02), _ckpt("gru", 0, "last.safetensors"),
        _ckpt("gru", 1, "best.safetensors", shift=0.02), _ckpt("gru", 1, "last.safetensors"),
        _ckpt("gru", 0, "best.safetensors", shift=0.02),  # the same checkpoint evaluated again
    ]
    lb = build_leaderboard(rows)
    by_name = {b.name: b for b in lb.rows}
    assert set(by_name) == {"gru (best.safetensors)", "gru (last.safetensors)"}
    assert [b.seeds for b in lb.rows] == [2, 2]  # seed 0 and 1 each; the re-evaluation is not a third
    assert {r.seed for r in by_name["gru (last.safetensors)"].runs} == {0, 1}
    assert any("1 earlier evaluation(s) of the same checkpoint ignored" in n for n in lb.notes)
    assert any("share a seed" in n for n in lb.notes)
    assert by_name["gru (last.safetensors)"].delta is not None  # compared with the leader, bootstrap and all


def test_two_regimes_with_one_seed_stay_two_rows():
    rows = [_ckpt("gru", 0, "best.safetensors", folder="runs/lr1e-3"),
            _ckpt("gru", 0, "best.safetensors", folder="runs/lr3e-4", shift=0.05)]
    lb = build_leaderboard(rows)
    assert [b.name for b in lb.rows] == ["gru (runs/lr3e-4-s0)", "gru (runs/lr1e-3-s0)"]
    assert all(b.seeds == 1 for b in lb.rows)
    # re-evaluating a checkpoint of an older database row without a sha256 still counts once per seed
    old = [run("gru", seed=0), run("gru", seed=0, shift=0.01)]
    lb = build_leaderboard(old)
    assert len(lb.rows) == 1 and lb.rows[0].seeds == 1
    assert lb.rows[0].metrics["CIDEr-D"] == pytest.approx(old[1].metrics["CIDEr-D"])  # the latest wins


def test_different_decoding_is_shown_in_every_format():
    rows = [run("gru-attn", shift=0.08), run("lstm", decoding={"beam_size": 1, "max_len": 16}), run("gru")]
    lb = build_leaderboard(rows)
    assert lb.varying_decoding == ["beam_size", "max_len"]
    table = lb.to_table().splitlines()
    assert "decoding" in table[1]
    assert "beam_size=1, max_len=16" in next(line for line in table if " lstm " in line)
    assert "beam_size=3, max_len=20" in next(line for line in table if " gru " in line)
    md = [[c.strip() for c in line.strip("|").split("|")] for line in lb.to_markdown().splitlines() if line.startswith("|")]
    col = md[0].index("decoding")
    assert {r[1]: r[col] for r in md[2:]}["lstm"] == "beam_size=1, max_len=16"
    csv_rows = {r["system"]: r for r in csv.DictReader(io.StringIO(lb.to_csv()))}
    assert json.loads(csv_rows["lstm"]["decoding"]) == {"beam_size": 1, "max_len": 16}
    page = lb.to_html()
    assert "<th" in page and ">decoding</th>" in page and ">beam_size=1, max_len=16</td>" in page
    assert any("decoding settings differ" in n for n in lb.notes)
    # one decoding for all: no extra column in the narrow formats
    assert "decoding" not in build_leaderboard(rows[::2]).to_table().splitlines()[1]


def test_markdown_cells_are_literal_text():
    rows = [run("gru"), run("a|b\nc <b>x</b> & y", shift=-0.1)]
    md = build_leaderboard(rows).to_markdown()
    lines = [line for line in md.splitlines() if line.startswith("|")]
    assert len(lines) == 4  # header, rule, two rows: the newline did not break the row
    cells = [c for c in lines[3].split(" | ")]
    assert cells[1] == "a\\|b c &lt;b&gt;x&lt;/b&gt; &amp; y"
    assert "<b>" not in md


def test_same_name_different_decoding_are_told_apart():
    rows = [run("gru"), run("gru", decoding={"beam_size": 1, "max_len": 20})]
    names = sorted(b.name for b in build_leaderboard(rows).rows)
    assert names == ["gru (beam_size=1)", "gru (beam_size=3)"]


def test_other_metric_ranks_without_interval_and_metric_names_are_forgiving():
    rows = [run("gru"), run("gru-attn", shift=0.08)]
    assert build_leaderboard(rows, metric="cider").metric == "CIDEr-D"
    lb = build_leaderboard(rows, metric="bleu_4")
    assert lb.metric == "BLEU-4" and lb.rows[1].significant is None
    assert any("without interval" in n for n in lb.notes)
    with pytest.raises(ZooError, match="recorded metrics"):
        build_leaderboard(rows, metric="SPICE")
    with pytest.raises(ZooError, match="at least 1000"):
        build_leaderboard(rows, resamples=100)


# -- exports --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def board():
    return build_leaderboard([run("gru"), run("gru-attn", shift=0.08), run("lstm", shift=0.07, noise=0.3)])


def test_markdown_parses_back(board):
    lines = [l for l in board.to_markdown().splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    body = [[c.strip() for c in l.strip("|").split("|")] for l in lines[2:]]
    assert header[:3] == ["rank", "system", "CIDEr-D ×100"]
    assert [r[1] for r in body] == ["gru-attn", "lstm", "gru"]
    assert all(len(r) == len(header) for r in body)


def test_csv_parses_back(board):
    rows = list(csv.DictReader(io.StringIO(board.to_csv())))
    assert [r["system"] for r in rows] == ["gru-attn", "lstm", "gru"]
    assert float(rows[0]["CIDEr-D_x100"]) == pytest.approx(board.rows[0].metrics["CIDEr-D"] * 100)
    assert rows[0]["delta_x100"] == "" and rows[1]["significant"] == "false" and rows[2]["significant"] == "true"
    assert float(rows[2]["delta_lo_x100"]) < float(rows[2]["delta_hi_x100"]) < 0


def test_json_parses_back(board):
    doc = json.loads(board.to_json())
    assert doc["data"] == "shapes" and doc["split"] == "test" and doc["metric"] == "CIDEr-D"
    assert [r["rank"] for r in doc["rows"]] == [1, 2, 3]
    r = doc["rows"][2]
    assert r["delta_x100"]["lo"] < r["delta_x100"]["mean"] < r["delta_x100"]["hi"]
    assert r["runs"][0]["seed"] == 0 and r["config_hash"] == config_hash({"system": "gru"})


def test_html_is_self_contained(board):
    page = board.to_html(board.plot_png())
    assert "<table" in page and "gru-attn" in page and "<script>" in page
    assert "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page


def test_plot_writes_an_image(board, tmp_path):
    path = board.plot(tmp_path / "board.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the command line -----------------------------------------------------------------------------------
def _db(tmp_path, rows):
    path = tmp_path / "results.sqlite"
    with ResultsDB(path) as db:
        for r in rows:
            db.record(r)
    return path


def test_cli_table_json_and_html(tmp_path, capsys):
    path = _db(tmp_path, [run("gru"), run("gru-attn", shift=0.08), run("other", split="val")])
    assert main(["leaderboard", "--db", str(path), "--data", "shapes", "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "gru-attn" in out and "other" not in out and "Δ to leader" in out
    assert main(["leaderboard", "--db", str(path), "--split", "test", "--format", "json"]) == 0
    assert [r["system"] for r in json.loads(capsys.readouterr().out)["rows"]] == ["gru-attn", "gru"]
    page, png = tmp_path / "board.html", tmp_path / "board.png"
    assert main(["leaderboard", "--db", str(path), "--split", "test", "--out", str(page), "--plot", str(png)]) == 0
    assert "data:image/png;base64," in page.read_text() and png.stat().st_size > 0


def test_cli_refuses_mixed_splits_and_missing_db(tmp_path, capsys):
    path = _db(tmp_path, [run("gru"), run("gru-attn", split="val")])
    assert main(["leaderboard", "--db", str(path)]) == 2
    err = capsys.readouterr().err
    assert "split=val" in err and "--split" in err
    assert main(["leaderboard", "--db", str(tmp_path / "missing.sqlite")]) == 2
    assert "missing.sqlite" in capsys.readouterr().err


def test_cli_refuses_an_out_extension_that_names_no_format(tmp_path, capsys):
    path = _db(tmp_path, [run("gru"), run("gru-attn", shift=0.08)])
    out = tmp_path / "board.xlsx"
    assert main(["leaderboard", "--db", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'.xlsx'" in err and ".csv" in err and ".html" in err and "--format" in err and not out.exists()
    assert main(["leaderboard", "--db", str(path), "--out", str(out), "--format", "csv"]) == 0
    assert out.read_text().startswith("rank,")
    assert main(["leaderboard", "--db", str(path), "--out", str(tmp_path / "board.txt")]) == 0
    assert "Δ to leader" in (tmp_path / "board.txt").read_text()


def test_cli_without_matching_rows_lists_what_there_is_closest_first(tmp_path, capsys):
    path = _db(tmp_path, [run("a", data="coco-karpathy"), run("b"), run("c", split="val"), run("d", data="folder")])
    assert main(["leaderboard", "--db", str(path), "--data", "shpes", "--split", "test"]) == 1
    err = capsys.readouterr().err
    listed = err[err.index("Results exist for"):]
    assert "--data shapes --split test (1 row)" in listed
    assert listed.index("--data shapes --split test") < listed.index("--data shapes --split val")
    assert listed.index("--data shapes --split val") < listed.index("--data coco-karpathy")
    empty = tmp_path / "empty.sqlite"
    ResultsDB(empty).close()
    assert main(["leaderboard", "--db", str(empty), "--data", "shapes"]) == 1
    assert "empty" in capsys.readouterr().err


def test_plot_keeps_long_labels_inside_the_image(tmp_path):
    """Labels of points at a panel's right edge used to run off the figure: the image's outer border must
    be background, so nothing drawn is cut at the edge."""
    from PIL import Image

    long_names = ["tf_efficientnet_lite0+gru-attn+sentencepiece (best.safetensors)",
                  "convnext_tiny.fb_in22k_ft_in1k+gru-stacked+word (last.safetensors)", "x"]
    rows = [run(n, shift=0.03 * i) for i, n in enumerate(long_names)]
    for i, r in enumerate(rows):  # the longest names have the most parameters and the fastest decoding
        r.params_decoder = 1_000_000 * (3 - i)
        r.decode_images_per_s = 100.0 * (3 - i)
    path = build_leaderboard(rows).plot(tmp_path / "board.png")
    img = np.asarray(Image.open(path).convert("L"))
    border = np.concatenate([img[:3].ravel(), img[-3:].ravel(), img[:, :3].ravel(), img[:, -3:].ravel()])
    assert border.min() > 240, "something is drawn across the edge of the image"


# -- damaged rows ----------------------------------------------------------------------------------------
def _damage(path, row_id: int, column: str, text: str) -> None:
    """Write ``text`` into a stored row's JSON column, as a hand edit or another program might."""
    import sqlite3

    conn = sqlite3.connect(path)
    with conn:
        conn.execute(f"UPDATE evaluations SET {column} = ? WHERE id = ?", (text, row_id))
    conn.close()


@pytest.mark.parametrize("fmt", ["html", "table", "json"])
def test_damaged_rows_are_reported_and_skipped_the_rest_ranked(tmp_path, capsys, fmt):
    """A NaN per-image CIDEr-D, a list where captions should be, a metric that is text: each used to end
    ``zoo leaderboard`` in a raw ValueError/AttributeError/TypeError."""
    path = _db(tmp_path, [run("gru"), run("gru-attn", shift=0.08), run("lstm", shift=0.05), run("tiny", shift=-0.1),
                          run("big", shift=0.1)])
    nan_scores = json.dumps({str(i): 1.0 for i in range(N)}).replace("1.0", "NaN", 1)
    _damage(path, 2, "per_image_cider", nan_scores)
    _damage(path, 3, "captions", json.dumps(["a caption", "another"]))
    _damage(path, 4, "metrics", json.dumps({"CIDEr-D": "1.2", "BLEU-4": 0.3}))
    out = tmp_path / f"board.{ {'table': 'txt'}.get(fmt, fmt) }"
    assert main(["leaderboard", "--db", str(path), "--format", fmt, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    text = out.read_text(encoding="utf-8")
    for row_id, what in ((2, "per_image_cider"), (3, "captions"), (4, "metrics")):
        assert f"row {row_id}" in err and what in err  # said where a person sees it
        assert f"row {row_id}" in text  # and kept with the board itself
    if fmt == "html":  # the two sound rows are the board's rows
        assert re.findall(r'data-system="\d+" title="[^"]*">([^<]*)</button>', text) == ["big", "gru"]
    elif fmt == "table":
        assert [line.split()[1] for line in text.splitlines() if re.match(r"\s+\d+  ", line)] == ["big", "gru"]
    else:
        doc = json.loads(text)
        assert [r["system"] for r in doc["rows"]] == ["big", "gru"]
        assert [s["id"] for s in doc["skipped_rows"]] == [2, 3, 4]
        assert "is nan, not a finite number" in doc["skipped_rows"][0]["problem"]


def test_only_damaged_rows_is_an_error_naming_them(tmp_path, capsys):
    path = _db(tmp_path, [run("gru"), run("lstm", shift=0.05)])
    _damage(path, 1, "metrics", json.dumps({"CIDEr-D": "high"}))
    _damage(path, 2, "metrics", json.dumps([0.5]))
    assert main(["leaderboard", "--db", str(path)]) == 2
    err = capsys.readouterr().err
    assert "row 1" in err and "row 2" in err and "metrics" in err and "Traceback" not in err


# -- names ------------------------------------------------------------------------------------------------
def test_names_say_what_differs_and_show_hashes_only_when_nothing_else_does():
    """Rows used to read ``resnet10t+updown+word (#6c7d367, scst, train #2cca1c3)``."""
    board = build_leaderboard(crowded_rows())
    assert [b.name for b in board.rows] == [
        "updown (scst, baseline=mean)", "updown (scst, baseline=greedy)", "gru-attn (attention_size=256)",
        "updown (xe)", "gru-attn (attention_size=512)", "gru (beam_size=3)", "gru (beam_size=1)"]
    assert board.shared_parts == {"encoder": "resnet10t", "tokenizer": "word"}
    assert any("Every row has encoder resnet10t, tokenizer word" in line for line in board.to_table().splitlines())
    # the whole identity is one --format json away
    doc = json.loads(board.to_json())
    first = doc["rows"][0]
    assert first["system_full"] == "resnet10t+updown+word" and first["objective"] == SCST
    assert f"objective {SCST}" in first["identity"] and f"config #{first['config_hash']}" in first["identity"]
    assert doc["shared_parts"] == board.shared_parts

    # old rows whose hash differs with nothing else to tell them apart: the hash, and only then
    old = [run("gru", config_hash="1a2b3c4" + "0" * 57), run("gru", shift=0.01)]
    names = [b.name for b in build_leaderboard(old).rows]
    assert names == [f"gru (#{old[1].config_hash[:7]})", "gru (#1a2b3c4)"]


def test_an_option_named_in_two_parts_says_which_part():
    a = run("gru", encoder_options={"dropout": 0.0}, decoder_options={"dropout": 0.5})
    b = run("gru", shift=0.01, encoder_options={"dropout": 0.1}, decoder_options={"dropout": 0.3},
            config_hash="f" * 64)
    c = run("gru", shift=0.02, encoder_options={"dropout": 0.0}, decoder_options={"dropout": 0.5, "hidden_size": 256},
            config_hash="e" * 64)
    names = sorted(x.name for x in build_leaderboard([a, b, c]).rows)
    assert names == ["gru (decoder.dropout=0.3, hidden_size=—, encoder.dropout=0.1)",
                     "gru (decoder.dropout=0.5, hidden_size=256, encoder.dropout=0.0)",
                     "gru (decoder.dropout=0.5, hidden_size=—, encoder.dropout=0.0)"]


def _label_boxes(fig):
    """Each panel's point labels as drawn: (panel, label text, the text's box in pixels, without the line to
    its point), from the renderer."""
    from matplotlib.text import Text  # lazy: matplotlib, as the views load it

    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    return [(ax, t.get_text(), Text.get_window_extent(t, renderer))
            for ax in fig.axes for t in ax.texts if t.get_gid() == _LABEL_GID]


def test_plot_labels_never_overlap_when_systems_crowd(tmp_path):
    """Three systems at 186–188 CIDEr-D with nearly equal parameters and speeds: their full names were an
    unreadable jumble in both panels. Each point now carries its rank, placed clear of every other label
    and point, inside its panel; the key under the panels names the ranks."""
    board = build_leaderboard(crowded_rows())
    fig = figure(board)
    boxes = _label_boxes(fig)
    assert sorted(text for _, text, _ in boxes) == sorted(str(b.rank) for b in board.rows for _ in range(2))
    for i, (ax, text, box) in enumerate(boxes):
        frame = ax.get_window_extent()
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, text
        for other_ax, other, other_box in boxes[i + 1:]:
            assert other_ax is not ax or not box.overlaps(other_box), f"labels {text} and {other} overlap"
        # no label covers a point's centre
        for line in ax.lines:
            for x, y in zip(*line.get_data()):
                assert not box.contains(*ax.transData.transform((x, y))), f"label {text} covers a point"
    key = [t.get_text() for t in fig.legends[0].get_texts()]
    assert key == [b.name for b in board.rows]
    path = board.plot(tmp_path / "crowded.png")  # and it saves
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_label_placement_holds_for_many_coincident_points():
    """Eleven systems within 0.1 CIDEr-D at one spot, one far below: every label still finds a free place."""
    rows = [run(f"dec{i}", shift=0.0001 * i, noise=0.0) for i in range(11)] + [run("far", shift=-0.5)]
    for r in rows:
        r.params_decoder, r.decode_images_per_s = 1_000_000, 100.0
    rows[-1].params_decoder, rows[-1].decode_images_per_s = 3_000_000, 300.0
    boxes = _label_boxes(figure(build_leaderboard(rows)))
    assert len(boxes) == 24
    for i, (ax, text, box) in enumerate(boxes):
        assert not any(a is ax and box.overlaps(b) for a, _, b in boxes[i + 1:]), text
