"""A model's attention, caption by caption: the ``CaptionAttention`` (``zoo.generation.attention``) of
hypotheses a beam search found with ``return_attention=True``, and for PIL images the image as the encoder
saw it beside its caption's attention (what the ``--attention`` figure and the report's strips draw).

Here rather than in ``zoo.generation``: these need the model (its tokenizer to label tokens, its encoder
to fold the weights onto the grid and undo the normalisation), and generation knows decoders only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from zoo.generation.attention import END, CaptionAttention
from zoo.generation.beam import Hypothesis
from zoo.generation.checks import check_attends

if TYPE_CHECKING:
    from zoo.models.caption_model import CaptionModel


def caption_attention(
    model: "CaptionModel", hyps: Sequence["Hypothesis"], image_size: tuple[int, int] | None
) -> list[CaptionAttention]:
    """``CaptionAttention`` for hypotheses found with ``return_attention=True``; ``image_size`` (H, W) of
    the transformed images, None when decoding started from features (the encoder's own input size)."""
    tok = model.tokenizer
    out = []
    for h in hyps:
        assert h.attention is not None, "beam_search(..., return_attention=True) gives every hypothesis weights"
        words = [END if t == tok.eos_id else tok.decode([t]) for t in h.tokens]
        grid = model.encoder.grid_shape(h.attention.shape[-1], image_size)
        out.append(CaptionAttention(tok.decode(h.tokens), words, h.attention.float(), tuple(grid)))
    return out


@torch.no_grad()
def attention_for_images(
    model: "CaptionModel", images: Sequence[Any], **generate_kwargs: Any
) -> list[tuple[torch.Tensor, CaptionAttention]]:
    """For PIL images: (the image as the encoder saw it, (H, W, 3) in [0, 1]; its ``CaptionAttention``).
    ``generate_kwargs`` go to ``generate`` (``beam_size``, ``max_len``, ...). A decoder without attention
    raises a ZooError naming it before any image is decoded."""
    check_attends_model(model)
    tf = model.transform(train=False)
    dev = next(model.parameters()).device
    batch = torch.stack([tf(img.convert("RGB")) for img in images]).to(dev)
    found = model.generate(batch, return_attention=True, **generate_kwargs)
    views = model.encoder.unnormalize(batch).permute(0, 2, 3, 1).cpu()
    return list(zip(views, found))  # type: ignore[arg-type]


def check_attends_model(model: "CaptionModel") -> None:
    """A ZooError naming the model's decoder when it has no attention to show."""
    check_attends(model.decoder, model.config.get("decoder", {}).get("name"))
