"""What people look at, drawn from plain data: figures, curves, attention figures, HTML pages.

- ``figures``: matplotlib on the Agg canvas (no pyplot), figures saved atomically.
- ``curves``: training curves from a run's ``log.jsonl`` (``curves.png``, ``zoo curves`` overlays).
- ``attention_figure``: attention maps upsampled onto the image, one panel per word.
- ``html_page`` and ``templates/``: what the pages share (skeleton, CSS, scripts, JSON embedded safely,
  thumbnails).
- ``leaderboard_columns``: what every view of a ranked leaderboard shows: its columns, title and legend.
- ``leaderboard``: a ranked leaderboard as a terminal table, Markdown, CSV, JSON and a plot.
- ``leaderboard_page``: the leaderboard's HTML page (drill-down to images, two systems side by side).

May import: ``zoo.generation`` (attention), ``zoo.files``, ``zoo.errors``, numpy, torch, PIL, and matplotlib
inside the functions that draw (importing a view costs no matplotlib). Views take what they draw as
arguments: training, evaluation and results call them, never the other way round; the types they draw
(``zoo.results.leaderboard.Leaderboard``) are imported for annotations only, under ``TYPE_CHECKING``.
"""
