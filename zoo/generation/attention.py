"""What ``CaptionModel.generate(..., return_attention=True)`` returns: each caption with, for every token
it generated, the decoder's attention over the encoder's grid and the grid's (h, w) to lay it on the image.

Why a small object rather than bare tensors: a weight row is useless without knowing which token it belongs
to and how the N grid positions fold into rows and columns (a 7×7 CNN map, a 14×14 ViT patch grid with the
class token already left out, a 2×3 map of a wide image), and every consumer (the ``--attention`` figure,
the evaluation report's strips) needs all three together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch

from zoo.generation.checks import check_attends

if TYPE_CHECKING:
    from zoo.generation.beam import Hypothesis
    from zoo.models.caption_model import CaptionModel

END = "<end>"  # the label of the <eos> token's row


@dataclass
class CaptionAttention:
    """One generated caption and the attention behind each of its tokens.

    ``words[t]`` labels token t (``"<end>"`` for <eos>); ``weights[t]`` (N,) are the weights over the grid
    the decoder used to predict it, summing to 1; grid position i is row ``i // w``, column ``i % w`` of
    ``grid_shape = (h, w)``, over the image the encoder saw (after its transform's resize and crop)."""

    caption: str
    words: list[str]
    weights: torch.Tensor  # (len(words), N), float32, CPU
    grid_shape: tuple[int, int]

    def maps(self) -> torch.Tensor:
        """The weights folded onto the grid: (len(words), h, w)."""
        return self.weights.reshape(len(self.words), *self.grid_shape)


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
