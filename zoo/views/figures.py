"""Matplotlib figures the zoo writes (attention maps, training curves): made on the Agg canvas without
pyplot, so no global backend is changed (a notebook's interactive backend is left alone, a headless
machine needs no display), and saved atomically, the format from the file name."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.files import atomic_write

FORMATS = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


def agg_figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` (inches) with a constrained layout, on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib costs ~0.3 s; only drawing needs it
    from matplotlib.figure import Figure  # lazy: as above

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def check_figure_path(path: str | Path, what: str = "figure") -> Path:
    """``path`` if its suffix names a format we write; else a ZooError naming the file (call it before
    spending minutes on what the figure shows)."""
    path = Path(path)
    fmt = path.suffix.lower()
    if fmt not in FORMATS:
        raise ZooError(f"cannot write {what} {path}: unknown format {fmt or '(no suffix)'!r}; use a file name "
                       f"ending in {', '.join(FORMATS)}")
    if path.is_dir():
        raise ZooError(f"cannot write {what} {path}: it is a folder; give a file name such as {path / 'out.png'}")
    return path


def save_figure(fig: Any, path: str | Path, *, dpi: int = 100, what: str = "figure") -> Path:
    """Write ``fig`` to ``path`` atomically (readers never see half a file). An unknown suffix is a
    ZooError naming the file and the formats."""
    path = check_figure_path(path, what)
    fmt = path.suffix.lower()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt.lstrip(".").replace("jpg", "jpeg"), dpi=dpi,
                                               metadata=_metadata(fmt)))
    return path


def figure_bytes(fig: Any, fmt: str = "png", dpi: int = 100) -> bytes:
    """``fig`` encoded in memory (for pages that embed it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, metadata=_metadata("." + fmt))
    return buf.getvalue()


def _metadata(fmt: str) -> dict[str, Any] | None:
    # no software/date stamps in PNGs: the same figure gives the same bytes
    return {"Software": None} if fmt == ".png" else None
