"""The evaluation report: ``report_*.html``, written by ``zoo eval`` next to ``results_*.json``.

A score says how good a model is; the report shows *where* it fails. One self-contained page (no
network): the scores with their decoding settings, then every evaluated image with its generated
caption, its references and its own CIDEr-D, sortable worst-first or best-first, with a text filter.

Thumbnails are small JPEGs embedded as data URIs, ~3 KB each, for at most ``report_images`` images
(``zoo eval --report-images N``, default :data:`DEFAULT_REPORT_IMAGES`): the N/2 lowest and N/2 highest
CIDEr-D, where a reader looks first, so a 5,000-image COCO report with every thumbnail is about 18 MB and
the default one about 5 MB. Every image is listed either way (its text is cheap). The same thumbnails are
stored in the results database with the row, so the leaderboard page can show them. For an attention
decoder, up to :data:`ATTENTION_IMAGES` of those images also get a strip: one small panel per generated
word, that word's attention over the image.

Thumbnails and strips are drawn the same way: the whole image, with what the encoder did not see (outside
the centre crop of its transform, ``zoo.views.attention_figure.encoder_crop``) dimmed and framed, and the
page says which crop that was ("encoder input: centre crop 224×224 of the image resized to 256 px on its
shorter side"). A strip's attention lies on the crop, where the grid is. The thumbnails kept for the
results database are the plain ones (the leaderboard shows one image for systems with other encoders).
"""

from __future__ import annotations

import inspect
import io
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import PIL.Image
import torch

from zoo.evaluation.coco import SCALE_NOTE, not_computed_reason
from zoo.files import atomic_write
from zoo.models.caption_model import attention_for_images
from zoo.views import html_page
from zoo.views.attention_figure import EncoderCrop, encoder_crop, upsample

DEFAULT_REPORT_IMAGES = 1000
#: attention decoders: images that get a strip of per-word attention maps (the lowest and highest
#: CIDEr-D among those with thumbnails); each strip costs a decode and ~1 KB per word, so fewer than thumbnails
ATTENTION_IMAGES = 100
ATTENTION_PANEL = 64  # pixels, the longer side of one word's panel
OUTSIDE_CROP = 0.35  # brightness of what the encoder did not see, in thumbnails and strips


def thumbnail_ids(per_image: Mapping[str, float], ids: Sequence[str], limit: int) -> list[str]:
    """The images that get a thumbnail: all of ``ids`` when there are at most ``limit``, else the
    ``limit // 2`` lowest and the rest highest by per-image score (ties in data set order), in data set
    order. Images without a score count as lowest."""
    if limit <= 0:
        return []
    if len(ids) <= limit:
        return list(ids)
    position = {k: i for i, k in enumerate(ids)}
    ranked = sorted(ids, key=lambda k: (per_image.get(k, float("-inf")), position[k]))
    low = limit // 2
    chosen = set(ranked[:low]) | set(ranked[len(ranked) - (limit - low):])
    return [k for k in ids if k in chosen]


def make_thumbnails(items: Mapping[str, Any], ids: Sequence[str]) -> dict[str, bytes]:
    """JPEG thumbnails of ``items[id]`` for ``ids``; an image that cannot be decoded gets none."""
    out = {}
    for k in ids:
        jpeg = html_page.thumbnail(items[k]) if k in items else None
        if jpeg is not None:
            out[k] = jpeg
    return out


CropOf = Callable[[tuple[int, int]], "EncoderCrop | None"]


def framed_thumbnails(items: Mapping[str, Any], thumbs: Mapping[str, bytes], crop_of: CropOf) -> dict[str, bytes]:
    """``thumbs`` redrawn as the report shows them: where the encoder's crop (``crop_of(image size)``)
    cuts the image, the whole image with the part outside the crop dimmed and framed; the others as
    they are."""
    out = dict(thumbs)
    for k in thumbs:
        try:
            image = items[k].load_image()
            crop = crop_of(image.size)
            if crop is not None and crop.cuts:
                out[k] = _jpeg(framed(image, crop, html_page.THUMBNAIL_SIZE), size=html_page.THUMBNAIL_SIZE)
        except Exception:  # noqa: BLE001 - a picture the report cannot frame keeps its plain thumbnail
            continue
    return out


def framed(image: PIL.Image.Image, crop: EncoderCrop | None, size: int, heat: Any = None) -> np.ndarray:
    """The whole ``image`` (longer side at most ``size``) as (H, W, 3) in [0, 1], what lies outside
    ``crop`` dimmed to :data:`OUTSIDE_CROP` with a light frame around the crop, and ``heat`` (a (h, w)
    grid of attention weights) laid over the crop: the grid covers exactly the pixels the encoder saw."""
    small = image.convert("RGB")
    small.thumbnail((size, size), PIL.Image.Resampling.BICUBIC)
    rgb = np.asarray(small, dtype=np.float32) / 255.0
    H, W = rgb.shape[:2]
    rx0, ry0, rx1, ry1 = crop.relative() if crop is not None else (0.0, 0.0, 1.0, 1.0)
    x0, y0, x1, y1 = (int(round(v)) for v in (rx0 * W, ry0 * H, rx1 * W, ry1 * H))
    out = rgb * OUTSIDE_CROP
    if heat is not None:
        from matplotlib import colormaps  # lazy: matplotlib takes ~0.4 s to import; only attention strips use it

        grid = torch.as_tensor(np.asarray(heat, dtype=np.float32))[None]
        full = upsample(grid, (max(y1 - y0, 1), max(x1 - x0, 1)))[0].numpy()
        full = full / max(float(full.max()), 1e-12)
        layer = np.zeros((H, W, 3), dtype=np.float32)
        sy, sx = slice(max(y0, 0), min(y1, H)), slice(max(x0, 0), min(x1, W))
        layer[sy, sx] = colormaps["inferno"](full[sy.start - y0: sy.stop - y0, sx.start - x0: sx.stop - x0])[..., :3]
        inside = 0.45 * rgb + 0.55 * layer
    else:
        inside = rgb
    mask = np.zeros((H, W), dtype=bool)
    mask[max(y0, 0):min(y1, H), max(x0, 0):min(x1, W)] = True
    out[mask] = inside[mask]
    if crop is not None and crop.cuts:  # a 1-px frame just outside the crop, on the dimmed part
        frame = np.zeros((H, W), dtype=bool)
        fy0, fy1, fx0, fx1 = max(y0 - 1, 0), min(y1, H - 1), max(x0 - 1, 0), min(x1, W - 1)
        frame[fy0:fy1 + 1, [fx0, fx1]] = True
        frame[[fy0, fy1], fx0:fx1 + 1] = True
        frame &= ~mask
        out[frame] = 0.9
    return out


def _decoding_text(decoding: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in decoding.items())


def render_report(
    ev: Any,
    system: str,
    thumbnails: Mapping[str, bytes] | None = None,
    attention: Mapping[str, Sequence[tuple[str, bytes]]] | None = None,
    source: str | None = None,
    thumbnail_limit: int | None = None,
    encoder_input: str | None = None,
) -> str:
    """The report page for ``ev`` (a :class:`zoo.evaluation.model_eval.ModelEvaluation`) as HTML text.

    ``thumbnails``: image id (str) → JPEG bytes; ``attention``: image id → (word, PNG or JPEG bytes) per
    generated word, shown as a strip under the caption; ``source``: what was evaluated (a checkpoint
    path), shown in the header; ``encoder_input``: which part of each image the encoder saw, in words."""
    e = html_page.text
    thumbnails = thumbnails or {}
    attention = attention or {}
    refs = {str(k): list(v) for k, v in ev.references.items()}
    rows = []
    for image_id, caption in ev.captions.items():
        k = str(image_id)
        row: dict[str, Any] = {
            "id": k,
            "caption": caption,
            "refs": refs.get(k, []),
            "score": ev.per_image_cider.get(k),
            "thumb": html_page.data_uri(thumbnails.get(k)),
        }
        if k in attention:
            row["attention"] = [{"word": w, "uri": html_page.image_uri(img)} for w, img in attention[k]]
        rows.append(row)

    scores = "".join(
        f'<tr><td>{e(name)}</td><td class="num" data-v="{value!r}">{value * 100:.1f}</td>'
        f'<td class="num" data-v="{value!r}">{value:.4f}</td></tr>'
        for name, value in ev.metrics.items()
    )
    missing = "".join(
        f"<p>{e(name)} not computed: {e(not_computed_reason(name, why))}</p>" for name, why in ev.not_computed.items()
    )
    notes = "".join(f"<p>Note: {e(n)}</p>" for n in ev.notes)
    if encoder_input:
        notes += f'<p class="encoder-input">Encoder input: {e(encoder_input)}.</p>'
    if thumbnail_limit is not None and len(thumbnails) < len(rows):
        notes += (
            f"<p>Thumbnails for {len(thumbnails)} of {len(rows)} images (the lowest and highest CIDEr-D; "
            f"<code>--report-images {thumbnail_limit}</code>); every image is listed.</p>"
        )
    protocol = "PTB-tokenized (the official protocol)" if ev.tokenized else "NOT PTB-tokenized (--no-ptb): not comparable with published scores"
    subset = f", the first {ev.max_images} only (not a reportable score)" if ev.max_images else ""
    head = [
        f"<h1>Evaluation report — {e(system)}</h1>",
        f'<p class="sub">{e(source) + " · " if source else ""}{e(ev.data)} / {e(ev.split)}: {ev.num_images} images{e(subset)}'
        f" · decoding: {e(_decoding_text(ev.decoding))} · {e(protocol)} · {ev.decode_images_per_s:.1f} images/s</p>",
        '<h2>Scores</h2><table class="scores sortable"><thead><tr><th>metric</th><th class="num">×100</th>'
        f'<th class="num">raw</th></tr></thead><tbody>{scores}</tbody></table>',
        f'<div class="notes"><p>{e(SCALE_NOTE)}. CIDEr-D of one image uses the document frequencies of the '
        f"whole set, so per-image scores add up (their mean is the corpus CIDEr-D) but mean little on a tiny "
        f"set.</p>{missing}{notes}</div>",
        "<h2>Images</h2>",
        '<div class="controls"><label>order <select id="order">'
        '<option value="worst">worst CIDEr-D first</option><option value="best">best CIDEr-D first</option>'
        '<option value="data">data set order</option></select></label>'
        '<input type="search" id="filter" placeholder="filter: words in captions, references or image id" '
        'aria-label="filter">'
        '<span class="count" id="count"></span></div>',
        '<div class="rows" id="rows"></div>',
    ]
    return html_page.page(f"Evaluation report — {system} on {ev.data}/{ev.split}", "\n".join(head),
                          {"images": rows}, "report.js")


def write_report(
    ev: Any,
    items: Mapping[str, Any],
    path: str | Path,
    system: str,
    report_images: int = DEFAULT_REPORT_IMAGES,
    attention: Any = None,
    source: str | None = None,
    crop_of: CropOf | None = None,
    encoder_input: str | None = None,
) -> dict[str, bytes]:
    """Write the report for ``ev`` to ``path`` (atomically); ``items``: image id (str) → data set item
    (for the thumbnails). ``attention``: image id → strips, or a function from the ids to show them for
    (at most :data:`ATTENTION_IMAGES` of those with thumbnails) to the strips. ``crop_of``: image size →
    the encoder's crop (:func:`framed_thumbnails`), ``encoder_input`` that crop in words, for the page.
    Returns the plain thumbnails made (image id → JPEG), for the results database."""
    page, thumbs = build_report(ev, items, system, report_images, attention, source, crop_of, encoder_input)
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return thumbs


def build_report(
    ev: Any, items: Mapping[str, Any], system: str, report_images: int = DEFAULT_REPORT_IMAGES,
    attention: Any = None, source: str | None = None, crop_of: CropOf | None = None,
    encoder_input: str | None = None,
) -> tuple[str, dict[str, bytes]]:
    """The report page (HTML text) and the plain thumbnails made for it, without writing anything: what
    :func:`write_report` writes, kept apart so the thumbnails survive a page that cannot be written."""
    ids = [str(k) for k in ev.captions]
    chosen = thumbnail_ids(ev.per_image_cider, ids, report_images)
    thumbs = make_thumbnails(items, chosen)
    if callable(attention):  # attention(ids) → strips, for the images chosen here
        attention = attention(thumbnail_ids(ev.per_image_cider, chosen, min(ATTENTION_IMAGES, len(chosen))))
    shown = framed_thumbnails(items, thumbs, crop_of) if crop_of is not None else thumbs
    page = render_report(ev, system, shown, attention, source=source, thumbnail_limit=report_images,
                         encoder_input=encoder_input)
    return page, thumbs


def attention_strips(
    model: Any, items: Mapping[str, Any], ids: Sequence[str], decoding: Mapping[str, Any],
    captions: Mapping[str, str] | None = None, batch_size: int = 16,
) -> dict[str, list[tuple[str, bytes]]]:
    """For an attention decoder (``attends``): image id → (word, JPEG) per generated token: the whole image
    drawn as its thumbnail is (:func:`framed`: outside the encoder's crop dimmed) with that token's
    attention laid over the crop (``zoo.views.attention_figure.upsample``, the mapping ``zoo caption
    --attention`` draws; the image as the encoder saw it when its crop cannot be read from the transform),
    decoded again with the evaluation's settings. Empty for
    other decoders. An image that cannot be decoded gets no strip, nor one whose caption decoded again
    differs from ``captions[id]`` (the one evaluated), so a strip never describes another caption."""
    if not getattr(model.decoder, "attends", False) or not ids:
        return {}
    from matplotlib import colormaps  # lazy: matplotlib takes ~0.4 s to import; only attention strips use it

    transform = model.transform(train=False)
    accepted = inspect.signature(model.generate).parameters
    kwargs = {k: v for k, v in decoding.items() if k in accepted and k != "return_attention"}
    cmap = colormaps["inferno"]
    out: dict[str, list[tuple[str, bytes]]] = {}
    usable = []
    for k in ids:
        try:
            usable.append((k, items[k].load_image()))
        except Exception:  # noqa: BLE001 - a picture the report cannot show is left out, never fatal
            continue
    for start in range(0, len(usable), batch_size):
        part = usable[start:start + batch_size]
        found = attention_for_images(model, [img for _, img in part], **kwargs)
        for (k, image), (view, att) in zip(part, found):
            if captions is not None and captions.get(k) != att.caption:
                continue
            crop = encoder_crop(transform, image.size)
            if crop is not None:
                maps = att.maps().numpy()
                out[k] = [(word, _jpeg(framed(image, crop, ATTENTION_PANEL, heat=maps[t])))
                          for t, word in enumerate(att.words)]
                continue
            view = view.numpy() if hasattr(view, "numpy") else np.asarray(view)
            heat = upsample(att.maps(), view.shape[:2]).numpy()
            panels = []
            for t, word in enumerate(att.words):
                h = heat[t] / max(float(heat[t].max()), 1e-12)
                blend = 0.45 * view + 0.55 * cmap(h)[..., :3]
                panels.append((word, _jpeg(blend)))
            out[k] = panels
    return out


def _jpeg(rgb: Any, size: int = ATTENTION_PANEL) -> bytes:
    img = PIL.Image.fromarray((np.clip(rgb, 0, 1) * 255).astype("uint8"))
    img.thumbnail((size, size), PIL.Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=html_page.THUMBNAIL_QUALITY)
    return buf.getvalue()


def system_name(config: Mapping[str, Any]) -> str:
    """``encoder+decoder+tokenizer``, the name the results database gives a model."""
    return "+".join(str(config.get(part, {}).get("name", "?")) for part in ("encoder", "decoder", "tokenizer"))


def report_evaluation(
    ev: Any, model: Any, items: Mapping[str, Any], path: Path, report_images: int = DEFAULT_REPORT_IMAGES
) -> None:
    """What :func:`zoo.evaluation.model_eval.evaluate_model` calls once an evaluation is scored: write its report
    to ``path`` (with attention strips when the decoder attends) and keep the thumbnails on ``ev``
    (``ev.thumbnails``) for the results database."""
    def strips(ids: Sequence[str]) -> dict[str, list[tuple[str, bytes]]]:
        return attention_strips(model, items, ids, ev.decoding, {str(k): c for k, c in ev.captions.items()})

    transform = model.transform(train=False)
    crop = encoder_crop(transform, (640, 480))  # the words do not depend on the size
    encoder_input = (f"{crop.description}; thumbnails and attention strips show the whole image, what lies "
                     "outside the crop dimmed and framed") if crop is not None else (
        "the image as the encoder's transform makes it; which part that is cannot be read from the "
        "transform, so the thumbnails show the whole image")
    page, ev.thumbnails = build_report(ev, items, system_name(model.config), report_images, attention=strips,
                                       crop_of=lambda size: encoder_crop(transform, size),
                                       encoder_input=encoder_input)
    # the thumbnails are kept on ``ev`` first: the database stores them even if the page cannot be written
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    ev.report_path = path
