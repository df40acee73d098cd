"""What ``CaptionModel.generate(..., return_attention=True)`` returns: each caption with, for every token
it generated, the decoder's attention over the encoder's grid and the grid's (h, w) to lay it on the image.

Why a small object rather than bare tensors: a weight row is useless without knowing which token it belongs
to and how the N grid positions fold into rows and columns (a 7×7 CNN map, a 14×14 ViT patch grid with the
class token already left out, a 2×3 map of a wide image), and every consumer (the ``--attention`` figure,
the evaluation report's strips) needs all three together. Built from a beam search's hypotheses by
``zoo.models.caption_model``, which knows the model's tokenizer and encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
