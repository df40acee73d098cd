"""The leaderboard as one self-contained HTML page that drills down to the images behind the scores.

``Leaderboard.to_html`` (``zoo leaderboard --format html``, ``zoo compare --html``, the demo's
``demo/leaderboard.html``) renders here. Above: the ranked table (sortable), a one-sentence reading of the
intervals, the legend and the plot. Below: click a system to see its caption of every image, worst
CIDEr-D first; choose a second system to see both captions side by side, the images where their CIDEr-D
differs most first (the per-image differences the paired bootstrap resamples).

The drill-down needs each system's captions (stored with its row since schema version 2) and, for
pictures and references, the results database's ``images`` table (``ResultsDB.images``); without them
the page still ranks, and says what is missing. For a system with several seeds the captions shown are
one run's (the first with captions), and the page says which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from zoo.views import html_page, leaderboard_columns

if TYPE_CHECKING:
    from zoo.results.leaderboard import BoardRow, Leaderboard

#: what the Δ column's interval means, for someone who has never met a bootstrap
INTERVAL_SENTENCE = (
    "How to read Δ: the bracket is the range in which the gap to the leader would fall 95 times out of 100 "
    "if we had tested on another set of images like these; when it includes 0 (marked ≈), this test set "
    "cannot tell that system and the leader apart."
)

NB_HYPHEN = "\u2011"

Images = Mapping[str, "tuple[list[str], bytes | None]"]


def _shown_run(b: "BoardRow") -> Any:
    return next((r for r in b.runs if r.captions), b.runs[0])


def drilldown_data(board: "Leaderboard", images: Images | None = None) -> dict[str, Any]:
    """The JSON the page's script reads: image ids (in data set order), their references and thumbnails
    (data URIs) aligned with them, and per system its per-image CIDEr-D and captions (None when the row
    recorded none)."""
    images = images or {}
    shown = [_shown_run(b) for b in board.rows]
    ids: dict[str, None] = {}
    for r in shown:
        for k in r.per_image_cider or r.captions:
            ids.setdefault(k, None)
    order = list(ids)
    systems = []
    for i, (b, r) in enumerate(zip(board.rows, shown)):
        label = ""
        if b.seeds > 1:
            label = f"captions of seed {r.seed}" if r.seed is not None else f"captions of row {r.id}"
            label += f", one of its {b.seeds} runs"
        systems.append({
            "name": b.name,
            "rank": b.rank,
            "shown": label,
            "identity": b.identity,
            "scores": [None if k not in r.per_image_cider else round(r.per_image_cider[k], 5) for k in order]
            if r.per_image_cider else None,
            "captions": [r.captions.get(k) for k in order] if r.captions else None,
        })
    return {
        "metric": board.metric,
        "ids": order,
        "refs": [list(images[k][0]) if k in images else [] for k in order],
        "thumbs": [html_page.data_uri(images[k][1]) if k in images else None for k in order],
        "systems": systems,
    }


def render(board: "Leaderboard", plot_png: bytes | None = None, images: Images | None = None) -> str:
    """The page as HTML text. ``images``: ``ResultsDB.images(board.references_hash)``, for thumbnails
    and references in the drill-down (without them it shows captions and scores only)."""
    e = html_page.text
    cols = leaderboard_columns.columns(board)
    # non-breaking hyphens: a narrow header wraps at its spaces ("CIDEr-D" / "×100"), never inside a name
    head = "".join(f'<th class="{"num" if c.numeric else "txt"}">{e(c.header).replace("-", NB_HYPHEN)}</th>'
                   for c in cols)
    body = []
    for i, b in enumerate(board.rows):
        cls = ' class="ns"' if b.significant is False else (' class="lead"' if b.rank == 1 else "")
        tds = []
        for c in cols:
            kind = "num" if c.numeric else "txt"
            value = e(_sort_value(c.value(b)))
            if c.header == "system":  # the name says what differs; hover (or click) tells the whole identity
                hover = "\n".join(b.identity + ["(click: its images and this identity)"])
                cell = f'<button class="sys" type="button" data-system="{i}" title="{e(hover)}">{e(c.text(b))}</button>'
            elif c.short is not None:  # abbreviated in the table, whole on hover
                cell = f'<span class="abbr" title="{e(c.text(b))}">{e(c.short(b))}</span>'
            else:
                cell = e(c.text(b))
            tds.append(f'<td class="{kind}" data-v="{value}">{cell}</td>')
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    img = ""
    if plot_png:
        img = (f'<details class="plot" open><summary>plot: {e(board.metric)} ×100 against parameters and '
               f'decoding speed</summary><figure><img alt="{e(board.metric)} vs parameters and decoding speed" '
               f'src="{html_page.png_uri(plot_png)}"></figure></details>')
    legend = "".join(f"<p>{e(line)}</p>" for line in leaderboard_columns.legend(board))
    data = drilldown_data(board, images)
    missing = "" if images else (
        '<p class="sub">No thumbnails or references are stored for this reference set (rows recorded '
        "without <code>zoo eval</code>, or before caption-zoo kept them): the images show as captions and "
        "scores only.</p>"
    )
    title = f"Caption Zoo leaderboard — {board.data} / {board.split}"
    html = f"""<h1>{e(title)}</h1>
<p class="sub">{e(leaderboard_columns.title(board))}</p>
<p class="explain">{e(INTERVAL_SENTENCE)}</p>
<div class="wide"><table class="board sortable">
<thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table></div>
<div class="legend">{legend}<p>Click a system's name to see its images; choose a second system below to
compare their captions side by side.</p></div>
{img}
<section id="drill">
<h2 id="drill-title">Images</h2>
{missing}
<div class="controls">
<label>system <select id="sys-a" aria-label="system"></select></label>
<label>side by side with <select id="sys-b" aria-label="second system"></select></label>
<label>order <select id="order" aria-label="order"></select></label>
<input type="search" id="filter" placeholder="filter: words in captions, references or image id" aria-label="filter">
<span class="count" id="count"></span>
</div>
<div id="drill-identity"></div>
<p class="sub" id="drill-note"></p>
<div class="rows" id="rows"></div>
</section>"""
    return html_page.page(title, html, data, "leaderboard.js")


def _sort_value(v: Any) -> str:
    if v is None:
        return ""
    return repr(float(v)) if isinstance(v, (int, float)) else str(v)
