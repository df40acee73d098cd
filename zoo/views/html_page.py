"""What the zoo's HTML pages (evaluation report, leaderboard) share: their templates, safe embedding of
data, and JPEG thumbnails.

The pages are single self-contained files meant to be opened from disk, mailed, or attached to a PR, so
nothing in them refers to the network: CSS and scripts are inline (read from ``zoo/templates/``), images
are data URIs, and the data a page shows travels as one JSON document inside a ``<script
type="application/json">`` element. The scripts build rows from that JSON with ``textContent`` only, so a
caption such as ``</script><b>`` is shown as text; :func:`embed_json` makes the JSON itself unable to
close its element. Rows are rendered a screenful at a time as the reader scrolls, so a page with 5,000
images opens as fast as one with 50.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from importlib import resources
from typing import Any

import PIL.Image

from zoo.errors import DataError

THUMBNAIL_SIZE = 112  # pixels, the longer side; small images are not enlarged
THUMBNAIL_QUALITY = 70  # JPEG quality: ~3 KB for a COCO photo at this size


def template(name: str) -> str:
    """The text of ``zoo/templates/NAME`` (CSS, JavaScript or an HTML skeleton)."""
    return resources.files("zoo.views").joinpath("templates", name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """``data`` as JSON that is safe inside ``<script type="application/json">``: ``<``, ``>`` and ``&``
    are written as ``\\u003c`` etc., so no caption can end the element or start markup."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def fill(skeleton: str, **parts: str) -> str:
    """Replace every ``{{KEY}}`` in ``skeleton`` with ``parts[KEY]`` (inserted as it is: escape data
    first, with :func:`text` or :func:`embed_json`), in one pass, so text inserted is never scanned
    again (a caption reading ``{{DATA}}`` stays that). A placeholder without a part is a bug: it raises."""
    missing = sorted(set(_PLACEHOLDER.findall(skeleton)) - set(parts))
    if missing:
        raise ValueError(f"template placeholder {{{{{missing[0]}}}}} was not filled")
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], skeleton)


_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


def text(value: Any) -> str:
    """``value`` as HTML text (quotes escaped too, so it is safe in an attribute)."""
    return html.escape(str(value), quote=True)


def page(title: str, body: str, data: Any, script: str) -> str:
    """A whole page: the shared skeleton and CSS, ``body`` (HTML, already escaped), ``data`` embedded as
    JSON, then the shared list view script and ``script`` (a template name) after it."""
    return fill(
        template("page.html"),
        TITLE=text(title),
        CSS=template("page.css"),
        BODY=body,
        DATA=embed_json(data),
        JS=template("listview.js") + "\n" + template(script),
    )


def data_uri(jpeg: bytes | None) -> str | None:
    return None if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_uri(data: bytes) -> str:
    """A data URI for PNG or JPEG bytes (told by their first bytes)."""
    return png_uri(data) if data[:8] == b"\x89PNG\r\n\x1a\n" else data_uri(data) or ""


def thumbnail(item: Any, size: int = THUMBNAIL_SIZE, quality: int = THUMBNAIL_QUALITY) -> bytes | None:
    """A small JPEG of a data set item's image (longer side ``size``), or None when the image cannot be
    decoded: a report must never fail an evaluation over one picture. JPEG files are decoded at reduced
    scale (Pillow's draft mode), which makes a thumbnail of a COCO photo several times cheaper than the
    full decode."""
    try:
        if getattr(item, "path", None) is not None and getattr(item, "render", None) is None:
            with PIL.Image.open(item.path) as im:
                im.draft("RGB", (size, size))
                # transparency is composited on white by the data set's own loader; everything else here
                img = im.convert("RGB") if im.mode in ("RGB", "L", "CMYK", "YCbCr", "I;16") else item.load_image()
        else:
            img = item.load_image()
        img.thumbnail((size, size), PIL.Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=quality, optimize=True)
        return buf.getvalue()
    except (DataError, OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError):
        return None
