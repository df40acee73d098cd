"""``CaptionModel``: an encoder, a decoder and a tokenizer that travel together."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from zoo.decoder import Decoder
from zoo.encoder import Encoder
from zoo.features import Features
from zoo.attention import CaptionAttention, caption_attention, check_attends_model
from zoo.generation import Hypothesis, beam_search
from zoo.tokenizer import Tokenizer


class CaptionModel(nn.Module):
    """Image → caption. ``config`` holds everything ``zoo.create_model`` needs to rebuild it
    (encoder/decoder/tokenizer names and options); the tokenizer itself is saved as bytes."""

    def __init__(self, encoder: Encoder, decoder: Decoder, tokenizer: Tokenizer, config: dict[str, Any]):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.config = copy.deepcopy(config)

    # -- training -------------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> Features:
        if self.encoder.frozen:
            with torch.no_grad():
                return self.encoder(images)
        return self.encoder(images)

    def forward(
        self,
        images_or_features: torch.Tensor | Features,
        tokens: torch.Tensor,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forcing logits (B, T, V) for input ``tokens`` (B, T) that start with <bos>; with a
        (B, T) bool mask ``keep``, only the logits at those positions, (K, V) in row-major order (decoders
        with ``skips_padding`` never compute the others)."""
        feats = images_or_features if isinstance(images_or_features, Features) else self.encode(images_or_features)
        if keep is None:
            return self.decoder(feats, tokens)
        if self.decoder.skips_padding:
            return self.decoder(feats, tokens, keep=keep)
        return self.decoder(feats, tokens)[keep]

    def loss(
        self,
        images_or_features: torch.Tensor | Features,
        captions: torch.Tensor,
        label_smoothing: float = 0.0,
        net: nn.Module | None = None,
    ) -> torch.Tensor:
        """Mean token cross-entropy; ``captions`` is ``tokenizer.batch_encode`` output (<bos> … <eos> pad).
        Padding is left out before the output layer, not masked after it. ``net`` is the module to call
        in place of this one: its DistributedDataParallel or ``torch.compile`` wrapper in training."""
        target = captions[:, 1:]
        keep = target != self.tokenizer.pad_id
        logits = (net if net is not None else self)(images_or_features, captions[:, :-1], keep)
        return nn.functional.cross_entropy(logits.float(), target[keep], label_smoothing=label_smoothing)

    # -- generation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_hypotheses(
        self,
        images_or_features: torch.Tensor | Features,
        beam_size: int = 3,
        max_len: int = 20,
        length_penalty: float = 1.0,
        return_attention: bool = False,
    ) -> list[Hypothesis]:
        if return_attention:
            check_attends_model(self)
        feats = (
            images_or_features
            if isinstance(images_or_features, Features)
            else self.encoder(images_or_features)
        )
        return beam_search(
            self.decoder,
            feats,
            bos_id=self.tokenizer.bos_id,
            eos_id=self.tokenizer.eos_id,
            beam_size=beam_size,
            max_len=max_len,
            length_penalty=length_penalty,
            return_attention=return_attention,
        )

    @torch.no_grad()
    def generate(
        self,
        images_or_features: torch.Tensor | Features,
        beam_size: int = 3,
        max_len: int = 20,
        length_penalty: float = 1.0,
        return_attention: bool = False,
    ) -> list[str] | list[CaptionAttention]:
        """Captions for a batch of transformed images (or precomputed features); beam_size=1 is greedy.

        ``return_attention=True`` (attention decoders only, e.g. ``gru-attn``; others raise a ZooError
        naming the decoder): a ``zoo.attention.CaptionAttention`` per image instead of a string: the
        caption, one label per generated token, their (T, N) weights over the grid and its (h, w)."""
        was_training = self.training
        self.eval()
        try:
            hyps = self.generate_hypotheses(
                images_or_features, beam_size, max_len, length_penalty, return_attention=return_attention
            )
        finally:
            self.train(was_training)
        if return_attention:
            size = None if isinstance(images_or_features, Features) else tuple(images_or_features.shape[-2:])
            return caption_attention(self, hyps, size)
        return [self.tokenizer.decode(h.tokens) for h in hyps]

    def transform(self, train: bool = False) -> Any:
        return self.encoder.transform(train=train)

    @torch.no_grad()
    def caption_images(self, images: Sequence[Any], **kwargs: Any) -> list[str]:
        """Captions for PIL images (transforms them with the encoder's data config)."""
        tf = self.transform(train=False)
        dev = next(self.parameters()).device
        batch = torch.stack([tf(img.convert("RGB")) for img in images]).to(dev)
        return self.generate(batch, **kwargs)

    def num_parameters(self) -> dict[str, int]:
        enc = sum(p.numel() for p in self.encoder.parameters())
        dec = sum(p.numel() for p in self.decoder.parameters())
        return {"encoder": enc, "decoder": dec, "total": enc + dec}
