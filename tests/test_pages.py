"""The evaluation report and the leaderboard page, read as files: what they embed, what they escape, what
the results database keeps for them. (tests/test_browser.py opens them in Chromium.)"""

from __future__ import annotations

import json
import re
import sqlite3
import warnings

import pytest

import zoo.results.database as results
from tests.pages import SYSTEMS, record_systems, shapes
from zoo.results.leaderboard import build_leaderboard
from zoo.evaluation.cider import SmallCorpusWarning
from zoo.evaluation.report import render_report, thumbnail_ids
from zoo.errors import ResultsDBError
from zoo.results.database import ResultsDB
from zoo.results.evalrecord import EvalRecord


def embedded(page: str):
    found = re.search(r'<script type="application/json" id="zoo-data">(.*?)</script>', page, re.S)
    assert found, "the page embeds its data"
    return json.loads(found.group(1))


@pytest.fixture(autouse=True)
def _quiet_small_sets():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallCorpusWarning)
        yield


def _evaluate(tmp_path, n=12, **kw):
    from tests.helpers import tiny_model
    from zoo.evaluation.model_eval import evaluate_model

    model = tiny_model()
    data = shapes(n)
    ev = evaluate_model(model, data, metrics=("cider-d",), tokenize=False, out_dir=tmp_path / "eval",
                        progress=False, **kw)
    return model, data, ev


def test_eval_writes_a_report_next_to_its_results(tmp_path):
    _, data, ev = _evaluate(tmp_path, report_images=4)
    assert ev.report_path == tmp_path / "eval" / "report_shapes_test_beam3_noptb.html"
    page = ev.report_path.read_text(encoding="utf-8")
    doc = embedded(page)
    results_file = json.loads(ev.results_path.read_text())
    by_id = {str(r["image_id"]): r["caption"] for r in results_file}
    # every image, with the caption written to results_*.json, its references and its own CIDEr-D
    assert [im["id"] for im in doc["images"]] == [str(item.image_id) for item in data]
    for im, item in zip(doc["images"], data):
        assert im["caption"] == by_id[im["id"]]
        assert im["refs"] == list(item.captions)
        assert im["score"] == pytest.approx(ev.per_image_cider[im["id"]])
    # thumbnails for --report-images of them, JPEG data URIs, the same ones kept for the database
    thumbs = [im for im in doc["images"] if im["thumb"]]
    assert len(thumbs) == 4 == len(ev.thumbnails)
    assert all(im["thumb"].startswith("data:image/jpeg;base64,") for im in thumbs)
    assert "beam_size=3" in page and "CIDEr-D" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page


def test_report_images_zero_lists_every_image_without_thumbnails(tmp_path):
    _, data, ev = _evaluate(tmp_path, n=6, report_images=0)
    doc = embedded(ev.report_path.read_text())
    assert len(doc["images"]) == 6 and not any(im["thumb"] for im in doc["images"])


def test_thumbnails_go_to_the_lowest_and_highest_scores_in_data_order():
    ids = [str(i) for i in range(10)]
    scores = {k: float(v) for k, v in zip(ids, [5, 1, 9, 3, 7, 0, 8, 2, 6, 4])}
    assert thumbnail_ids(scores, ids, 4) == ["1", "2", "5", "6"]  # 0 and 1 lowest, 9 and 8 highest
    assert thumbnail_ids(scores, ids, 3) == ["2", "5", "6"]
    assert thumbnail_ids(scores, ids, 50) == ids
    assert thumbnail_ids(scores, ids, 0) == []


def test_report_shows_data_as_text_never_as_markup(tmp_path):
    _, _, ev = _evaluate(tmp_path, n=4)
    evil = '</script><script>alert("x")</script> & <b>bold</b>'
    first = next(iter(ev.captions))
    ev.captions[first] = evil
    ev.notes.append("<i>note</i>")
    page = render_report(ev, "resnet10t+<gru>+word")
    assert "<script>alert" not in page and "<b>bold" not in page and "<i>note" not in page
    assert "&lt;gru&gt;" in page
    assert embedded(page)["images"][0]["caption"] == evil  # and the text itself survives intact


def test_record_keeps_captions_references_and_thumbnails(tmp_path):
    from zoo.results.record import record

    model, data, ev = _evaluate(tmp_path, n=8, report_images=2)
    db_path = tmp_path / "r.sqlite"
    record(ev, model, db_path)
    with ResultsDB(db_path) as db:
        (row,) = db.rows()
        images = db.images(row.references_hash)
    assert row.captions == {str(k): v for k, v in ev.captions.items()}
    assert set(images) == {str(item.image_id) for item in data}
    assert all(images[str(item.image_id)][0] == list(item.captions) for item in data)
    assert {k for k, (_, thumb) in images.items() if thumb} == set(ev.thumbnails)
    # a later evaluation of the same images adds its thumbnails; the ones stored stay
    ev.thumbnails = {k: b"\xff\xd8 other" for k in images}
    record(ev, model, db_path)
    with ResultsDB(db_path) as db:
        again = db.images(row.references_hash)
    assert all(again[k][1] == images[k][1] for k in ev.thumbnails if images[k][1])
    assert all(again[k][1] for k in again)


def test_a_version_1_database_gains_captions_and_images(tmp_path, monkeypatch):
    path = tmp_path / "old.sqlite"
    with monkeypatch.context() as m:  # a database as caption-zoo wrote it before schema version 2
        m.setattr(results, "_MIGRATIONS", results._MIGRATIONS[:1])
        m.setattr(results, "SCHEMA_VERSION", 1)
        m.setattr(results, "_COLUMNS", tuple(c for c in results._COLUMNS if c not in ("captions", "objective")))
        with ResultsDB(path) as db:
            db.record(EvalRecord(system="s", encoder="e", decoder="d", tokenizer="t", config_hash="h", data="x",
                                 split="test", references_hash="r", metrics={"CIDEr-D": 0.5}))
    with ResultsDB(path) as db:
        assert db.schema_version == results.SCHEMA_VERSION  # migrated through every later version
        (row,) = db.rows()
        assert row.captions == {} and row.metrics == {"CIDEr-D": 0.5}
        db.record_images("r", {"1": ["a dog"]}, {"1": b"jpeg"})
        assert db.images("r") == {"1": (["a dog"], b"jpeg")}
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == results.SCHEMA_VERSION
    conn.close()


def test_captions_must_match_the_images(tmp_path):
    rec = EvalRecord(system="s", encoder="e", decoder="d", tokenizer="t", config_hash="h", data="x", split="test",
                     references_hash="r", metrics={"CIDEr-D": 0.5}, num_images=2, captions={"1": "a dog"})
    with pytest.raises(ResultsDBError, match="captions has 1 entries but num_images is 2"):
        rec.validate()
    rec.captions = {1: "a dog", "2": "a cat"}
    with pytest.raises(ResultsDBError, match="str\\(image_id\\)"):
        rec.validate()


def test_leaderboard_page_embeds_every_systems_captions_and_the_images(tmp_path):
    db_path = record_systems(tmp_path / "r.sqlite", n=10)
    with ResultsDB(db_path) as db:
        board = build_leaderboard(db.rows())
        images = db.images(board.references_hash)
    page = board.to_html(board.plot_png(), images)
    doc = embedded(page)
    assert len(doc["ids"]) == 10 and all(t and t.startswith("data:image/jpeg") for t in doc["thumbs"])
    assert [s["name"] for s in doc["systems"]] == [b.name for b in board.rows]
    for s, b in zip(doc["systems"], board.rows):
        run = b.runs[0]
        assert s["captions"] == [run.captions[k] for k in doc["ids"]]
        assert s["scores"] == [pytest.approx(run.per_image_cider[k], abs=1e-5) for k in doc["ids"]]
    assert doc["refs"][0] == images[doc["ids"][0]][0]
    # the ranked table is still there, each system a button that opens its images; markup stays text
    assert page.count('<button class="sys"') == len(SYSTEMS)
    assert "<b>on</b>" not in page and "95 times out of 100" in page
    assert "http://" not in page and "https://" not in page


def test_leaderboard_page_without_stored_images_still_ranks_and_says_so(tmp_path):
    db_path = record_systems(tmp_path / "r.sqlite", n=6, thumbnails=False)
    with ResultsDB(db_path) as db:
        board = build_leaderboard(db.rows())
    page = board.to_html()
    assert "No thumbnails or references are stored" in page
    assert embedded(page)["refs"] == [[]] * 6


def test_a_caption_that_looks_like_a_placeholder_stays_text(tmp_path):
    _, _, ev = _evaluate(tmp_path, n=3)
    first = next(iter(ev.captions))
    ev.captions[first] = "{{DATA}} {{JS}} {{NOPE}}"
    page = render_report(ev, "{{TITLE}}")
    assert embedded(page)["images"][0]["caption"] == "{{DATA}} {{JS}} {{NOPE}}"
    assert "<h1>Evaluation report — {{TITLE}}</h1>" in page


def test_an_attention_decoder_gets_strips_for_its_ends_and_others_none(tmp_path, monkeypatch):
    import zoo.evaluation.report

    monkeypatch.setattr(zoo.evaluation.report, "ATTENTION_IMAGES", 2)
    from tests.helpers import tiny_model
    from zoo.evaluation.model_eval import evaluate_model

    data = shapes(5)
    ev = evaluate_model(tiny_model("gru-attn"), data, metrics=("cider-d",), tokenize=False, out_dir=tmp_path,
                        progress=False, report_images=4, max_len=6)
    images = embedded(ev.report_path.read_text())["images"]
    with_strips = [im for im in images if im.get("attention")]
    assert len(with_strips) == 2 and all(im["thumb"] for im in with_strips)
    for im in with_strips:  # one panel per generated token: the caption's words, then <end> if it ended
        words = [a["word"] for a in im["attention"]]
        assert " ".join(w for w in words if w != "<end>") == im["caption"]
        assert all(a["uri"].startswith("data:image/jpeg;base64,") for a in im["attention"])
    plain = evaluate_model(tiny_model("gru"), data, metrics=("cider-d",), tokenize=False, out_dir=tmp_path / "g",
                           progress=False, max_len=6)
    assert not any(im.get("attention") for im in embedded(plain.report_path.read_text())["images"])


def test_compare_and_demo_pages_carry_the_images_too(tmp_path, capsys):
    from zoo.commands.compare import show_leaderboard

    db_path = record_systems(tmp_path / "r.sqlite", n=5)
    page = tmp_path / "leaderboard.html"
    show_leaderboard([1, 2, 3], str(db_path), html=str(page))
    doc = embedded(page.read_text())
    assert len(doc["ids"]) == 5 and all(doc["thumbs"]) and all(doc["refs"])


def test_a_system_with_seeds_shows_one_runs_captions_and_says_which(tmp_path):
    db_path = record_systems(tmp_path / "r.sqlite", n=5)
    with ResultsDB(db_path) as db:
        rows = db.rows()
    second = EvalRecord.from_dict({**rows[0].to_dict(), "id": None, "seed": 1,
                                   "captions": {k: "another seed's caption" for k in rows[0].captions}})
    board = build_leaderboard([rows[0], second, *rows[1:]])
    # every row has encoder resnet10t and tokenizer word: systems are named by their decoders
    leader = next(s for s in embedded(board.to_html())["systems"] if s["name"] == rows[0].decoder)
    assert leader["shown"] == "captions of seed 0, one of its 2 runs"
    assert leader["captions"] == [rows[0].captions[k] for k in rows[0].captions]


def test_report_names_a_metric_not_computed_once(tmp_path):
    _, _, ev = _evaluate(tmp_path, n=3)
    ev.not_computed = {"SPICE": "SPICE was not computed: Stanford CoreNLP is missing"}
    page = render_report(ev, "sys")
    assert "<p>SPICE not computed: Stanford CoreNLP is missing</p>" in page
    assert "was not computed" not in page
