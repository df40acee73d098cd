"""The pages in a real headless Chromium, checked as a person would: the ranked rows and system names
are visible, clicking a system shows its images, the side-by-side view shows both captions, a 5,000-image
report opens with only a screenful of rows built, no console errors, no request leaves the machine.

One browser serves the module (an xdist group keeps these tests on one worker). Without Chromium and
chromedriver the tests skip, naming what to install; CI installs them (.ci/run).
Set ZOO_SCREENSHOTS=FOLDER to keep the screenshots."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.browser import console_problems, open_page, remote_requests, start_browser
from tests.pages import SCST, SCST_GREEDY, crowded_rows, record_systems, shapes
from zoo.cli import main
from zoo.evaluation.cider import SmallCorpusWarning
from zoo.results.leaderboard import build_leaderboard

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    keep = os.environ.get("ZOO_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)
    return path


def visible_rows(driver):
    from selenium.webdriver.common.by import By

    return [r for r in driver.find_elements(By.CSS_SELECTOR, "#rows .row") if r.is_displayed()]


def assert_clean(driver):
    assert console_problems(driver) == []
    assert remote_requests(driver) == []


@pytest.fixture(scope="module")
def board_page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("board")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallCorpusWarning)
        db = record_systems(tmp / "results.sqlite", n=24)
    page = tmp / "leaderboard.html"
    assert main(["leaderboard", "--db", str(db), "--out", str(page)]) == 0
    return page


def test_leaderboard_rows_click_through_and_side_by_side(browser, board_page, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_page(browser, board_page)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.board tbody tr")
    names = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "table.board button.sys")]
    assert len(rows) == 3 and all(r.is_displayed() for r in rows)
    assert names == ["gru-attn", "gru", "lstm"]  # every row has resnet10t and word: named by the decoder
    assert "95 times out of 100" in browser.find_element(By.CSS_SELECTOR, ".explain").text
    screenshot(browser, tmp_path, "leaderboard.png")

    # clicking a system shows its images, worst CIDEr-D first, with thumbnails that decoded
    browser.find_elements(By.CSS_SELECTOR, "table.board button.sys")[1].click()
    shown = visible_rows(browser)
    assert len(shown) == 24
    assert "gru" in browser.find_element(By.ID, "drill-title").text
    identity = browser.find_element(By.CSS_SELECTOR, "#drill-identity details")
    assert identity.is_displayed() and "resnet10t+gru+word" in identity.text  # the full name, one click away
    scores = [float(r.find_element(By.CSS_SELECTOR, ".score").text.split()[0]) for r in shown]
    assert scores == sorted(scores)
    first_caption = shown[0].find_element(By.CSS_SELECTOR, ".caption").text
    assert len(first_caption.split()) <= 4  # this system's captions: a reference cut to 4 words
    img = shown[0].find_element(By.CSS_SELECTOR, "img.thumb")
    browser.execute_script("arguments[0].scrollIntoView()", img)
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0
    screenshot(browser, tmp_path, "leaderboard-system.png")

    # a second system: both captions on every image, the largest difference first
    Select(browser.find_element(By.ID, "sys-b")).select_by_visible_text("3. lstm")
    pairs = visible_rows(browser)
    assert len(pairs) == 24
    for row in pairs[:5]:
        a = row.find_element(By.CSS_SELECTOR, ".cap-a")
        b = row.find_element(By.CSS_SELECTOR, ".cap-b")
        assert a.is_displayed() and b.is_displayed()
        assert a.text.startswith("gru") and b.text.startswith("lstm")
        assert "a shape <b>on</b> a background & more" in b.text  # markup in a caption is shown as text
    diffs = [abs(float(r.find_element(By.CSS_SELECTOR, ".id").text.rsplit(" ", 1)[1])) for r in pairs]
    assert diffs == sorted(diffs, reverse=True)
    screenshot(browser, tmp_path, "leaderboard-pair.png")

    # the filter keeps the images whose captions or references have every word
    field = browser.find_element(By.ID, "filter")
    field.send_keys("circle")
    kept = visible_rows(browser)
    assert 0 < len(kept) < 24 and all("circle" in r.text for r in kept)
    assert_clean(browser)


def test_leaderboard_link_opens_a_comparison(browser, board_page):
    from selenium.webdriver.common.by import By

    open_page(browser, board_page)
    browser.get(board_page.resolve().as_uri() + "#compare=0,2")
    browser.refresh()
    assert "vs" in browser.find_element(By.ID, "drill-title").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#rows .row.pair")) == 24
    assert_clean(browser)


def _big_evaluation(n: int):
    """An evaluation of ``n`` images (text only, the first eight with real thumbnails)."""
    ids = [str(i) for i in range(n)]
    scores = {k: ((i * 7919) % n) / n * 3 for i, k in enumerate(ids)}
    return SimpleNamespace(
        captions={k: f"caption {k} {'dog' if i % 10 == 0 else 'cat'}" for i, k in enumerate(ids)},
        references={k: [f"reference {k} one", f"reference {k} two"] for k in ids},
        per_image_cider=scores, metrics={"CIDEr-D": sum(scores.values()) / n, "BLEU-4": 0.2},
        not_computed={"SPICE": "needs Java 8"}, notes=[], tokenized=True, max_images=None, data="shapes",
        split="test", num_images=n, decoding={"beam_size": 3, "max_len": 20}, decode_images_per_s=100.0,
    )


def test_a_5000_image_report_builds_rows_on_demand(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from zoo.evaluation.report import make_thumbnails, render_report

    ev = _big_evaluation(5000)
    items = {str(i): item for i, item in enumerate(shapes(8))}
    page = tmp_path / "report.html"
    page.write_text(render_report(ev, "resnet10t+gru+word", make_thumbnails(items, list(items))), encoding="utf-8")
    open_page(browser, page)
    assert browser.find_element(By.ID, "count").text == "5000 of 5000 images"
    built = browser.find_elements(By.CSS_SELECTOR, "#rows .row")
    assert 0 < len(built) <= 200  # a screenful or so, not 5,000
    first = built[0]
    assert first.find_element(By.CSS_SELECTOR, ".score").text.startswith("0.0")  # worst first
    # scrolling to the end builds more
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    browser.implicitly_wait(0)
    grown = browser.execute_script(
        "return new Promise(r => setTimeout(() => r(document.querySelectorAll('#rows .row').length), 300))")
    assert grown > len(built)
    Select(browser.find_element(By.ID, "order")).select_by_value("best")
    top = browser.find_elements(By.CSS_SELECTOR, "#rows .row .score")[0].text
    assert float(top.split()[0]) == pytest.approx(max(ev.per_image_cider.values()) * 100, abs=0.05)
    browser.find_element(By.ID, "filter").send_keys("dog")
    assert browser.find_element(By.ID, "count").text == "500 of 5000 images"
    Select(browser.find_element(By.ID, "order")).select_by_value("data")
    browser.find_element(By.ID, "filter").clear()
    browser.find_element(By.ID, "filter").send_keys("caption 3 ")
    assert "caption 3 cat" in visible_rows(browser)[0].text
    screenshot(browser, tmp_path, "report.png")
    assert_clean(browser)


def test_attention_figure_and_report_strips(browser, tmp_path):
    from selenium.webdriver.common.by import By

    import zoo
    from tests.helpers import tiny_model
    from zoo.evaluation.model_eval import evaluate_model

    model = tiny_model("gru-attn")
    ckpt = zoo.save(model, tmp_path / "attn.safetensors")
    data = shapes(4)
    photo = tmp_path / "photo.png"
    data[0].load_image().save(photo)
    figure = tmp_path / "attention.png"
    assert main(["caption", str(ckpt), str(photo), "--attention", str(figure), "--max-len", "4"]) == 0
    open_page(browser, figure)
    img = browser.find_element(By.TAG_NAME, "img")
    assert img.is_displayed()
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 100
    screenshot(browser, tmp_path, "attention.png")
    assert_clean(browser)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallCorpusWarning)
        ev = evaluate_model(model, data, metrics=("cider-d",), tokenize=False, out_dir=tmp_path / "eval",
                            progress=False, max_len=4)
    open_page(browser, ev.report_path)
    rows = visible_rows(browser)
    assert len(rows) == 4
    for row in rows:
        panels = row.find_elements(By.CSS_SELECTOR, ".strip figure.att")
        words = [p.find_element(By.TAG_NAME, "figcaption").text for p in panels]
        caption = row.find_element(By.CSS_SELECTOR, ".caption").text
        assert panels and " ".join(w for w in words if w != "<end>") == caption
        first = panels[0].find_element(By.TAG_NAME, "img")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", first) > 0
    screenshot(browser, tmp_path, "report-attention.png")
    assert_clean(browser)


def test_report_score_table_sorts_by_every_column(browser, tmp_path):
    """Clicking the report's "metric" header threw TypeError (localeCompare of a cell without a sort value)
    and left the rows as they were; every header sorts, text by text and numbers by value."""
    from selenium.webdriver.common.by import By

    from zoo.evaluation.report import render_report

    ev = _big_evaluation(6)
    ev.metrics = {"CIDEr-D": 1.2, "BLEU-4": 0.31, "METEOR": 0.26, "ROUGE-L": 0.55, "SPICE": 0.2}
    page = tmp_path / "report.html"
    page.write_text(render_report(ev, "resnet10t+gru+word", {}), encoding="utf-8")
    open_page(browser, page)

    def names():
        return [r.find_elements(By.TAG_NAME, "td")[0].text
                for r in browser.find_elements(By.CSS_SELECTOR, "table.scores tbody tr")]

    headers = browser.find_elements(By.CSS_SELECTOR, "table.scores th")
    assert [h.text for h in headers][:2] == ["metric", "×100"]
    headers[0].click()
    assert names() == ["BLEU-4", "CIDEr-D", "METEOR", "ROUGE-L", "SPICE"]
    headers[0].click()
    assert names() == ["SPICE", "ROUGE-L", "METEOR", "CIDEr-D", "BLEU-4"]
    headers[1].click()
    assert names() == ["SPICE", "METEOR", "BLEU-4", "ROUGE-L", "CIDEr-D"]
    assert_clean(browser)


def test_a_crowded_board_fits_a_laptop_window(browser, tmp_path):
    """SCST signatures in the names and the objective column pushed BLEU-4 and every later column behind a
    scrollbar at 1400 px (the table was 2528 px wide): names say what differs, the objective column
    abbreviates with the whole signature on hover, and the table fits."""
    from selenium.webdriver.common.by import By

    board = build_leaderboard(crowded_rows())
    page = tmp_path / "crowded.html"
    page.write_text(board.to_html(board.plot_png()), encoding="utf-8")
    browser.set_window_size(1400, 900)
    try:
        open_page(browser, page)
        assert browser.execute_script("return innerWidth") == 1400
        doc = browser.execute_script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        wide = browser.execute_script("var w = document.querySelector('.wide'); return [w.scrollWidth, w.clientWidth]")
        assert doc[0] <= doc[1] and wide[0] <= wide[1], f"horizontal scrollbar: page {doc}, table {wide}"
        headers = {h.text.replace("\u2011", "-").replace("\n", " "): h
                   for h in browser.find_elements(By.CSS_SELECTOR, "table.board th")}
        for name in ("BLEU-4", "SPICE", "images"):
            box = browser.execute_script("return arguments[0].getBoundingClientRect().toJSON()", headers[name])
            assert headers[name].is_displayed() and 0 <= box["left"] and box["right"] <= 1400, (name, box)
        screenshot(browser, tmp_path, "leaderboard-1400.png")
        # the objective: abbreviated, the whole signature on hover
        spans = browser.find_elements(By.CSS_SELECTOR, "table.board span.abbr")
        assert [sp.text for sp in spans[:3]] == ["scst (baseline=mean)", "scst (baseline=greedy)", "scst (baseline=mean)"]
        assert [sp.get_attribute("title") for sp in spans[:3]] == [SCST, SCST_GREEDY, SCST]
        # a name: what differs; the whole identity on hover and one click away
        button = browser.find_elements(By.CSS_SELECTOR, "table.board button.sys")[2]
        assert button.text == "gru-attn (attention_size=256)"
        assert "attention_size=256" in button.get_attribute("title") and SCST in button.get_attribute("title")
        button.click()
        identity = browser.find_element(By.CSS_SELECTOR, "#drill-identity details")
        assert identity.is_displayed()
        for line in ("resnet10t+gru-attn+word", "decoder gru-attn: attention_size=256", f"objective {SCST}",
                     "config #" + board.rows[2].first.config_hash):
            assert line in identity.text
        assert_clean(browser)
    finally:
        browser.set_window_size(1280, 900)
