"""``CaptionModel``: an encoder, a decoder and a tokenizer that travel together."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from zoo.contracts.decoder import Decoder
from zoo.contracts.encoder import Encoder
from zoo.contracts.features import Features
from zoo.contracts.tokenizer import Tokenizer
from zoo.data.images import image_batch
from zoo.generation.attention import END, CaptionAttention
from zoo.generation.beam import Hypothesis, beam_search
from zoo.generation.checks import DecodingOptionError, check_attends
from zoo.generation.constraints import Constraints
from zoo.generation.options import DecodingOptions
from zoo.generation.sampling import Samples, sample
from zoo.registry.blame import blamed


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
        with self.blamed("encoder", "encoding images"):
            return self._encode(images)

    def _encode(self, images: torch.Tensor) -> Features:
        # forward's own path: no context manager inside what torch.compile traces (loss blames the call)
        if self.encoder.frozen:
            with torch.no_grad():
                return self.encoder(images)
        return self.encoder(images)

    def blamed(self, parts: str | Sequence[str], doing: str) -> Any:
        """A context in which a failure inside the own plugin code of one of ``parts`` (``"decoder"``,
        ``("decoder", "encoder")``) leaves as a PluginError naming the plugin and the part
        (``zoo.registry.blame``), by the name the model's config records; other failures pass unchanged."""
        found = []
        for part in [parts] if isinstance(parts, str) else parts:
            entry = self.config.get(part) if isinstance(self.config, dict) else None
            found.append((part, entry.get("name") if isinstance(entry, dict) else None, getattr(self, part)))
        return blamed(found, doing)

    def forward(
        self,
        images_or_features: torch.Tensor | Features,
        tokens: torch.Tensor,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forcing logits (B, T, V) for input ``tokens`` (B, T) that start with <bos>; with a
        (B, T) bool mask ``keep``, only the logits at those positions, (K, V) in row-major order (decoders
        with ``skips_padding`` never compute the others)."""
        feats = images_or_features if isinstance(images_or_features, Features) else self._encode(images_or_features)
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
        with self.blamed(("decoder", "encoder"), "computing the training loss (teacher-forced forward)"):
            logits = (net if net is not None else self)(images_or_features, captions[:, :-1], keep)
        return nn.functional.cross_entropy(logits.float(), target[keep], label_smoothing=label_smoothing)

    # -- generation -----------------------------------------------------------------------------------
    def images(self, images: Any) -> torch.Tensor:
        """Whatever was passed as images (PIL images, paths, uint8 arrays, lists of those, or a tensor batch
        already transformed; ``zoo.data.images``) as the (B, 3, H, W) batch the encoder reads, on the
        model's device; anything else is a ``ZooError`` naming it and what is accepted."""
        return image_batch(images, self.transform(train=False), _device(self))

    def _inputs(self, images_or_features: Any) -> torch.Tensor | Features:
        return images_or_features if isinstance(images_or_features, Features) else self.images(images_or_features)

    def _features(self, images_or_features: Any) -> Features:
        inputs = self._inputs(images_or_features)
        if isinstance(inputs, Features):
            return inputs
        with self.blamed("encoder", "encoding images"):
            return self.encoder(inputs)

    @torch.no_grad()
    def generate_hypotheses(
        self,
        images_or_features: Any,
        beam_size: int = 3,
        max_len: int = 20,
        length_penalty: float = 1.0,
        constraints: Constraints | None = None,
        return_attention: bool = False,
    ) -> list[Hypothesis]:
        """The best beam-search hypothesis per image (token ids, log-probability, score; with
        ``return_attention`` its attention weights too)."""
        if return_attention:
            check_attends_model(self)
        feats = self._features(images_or_features)
        with self.blamed("decoder", f"decoding (beam search, beam {beam_size}, {feats.batch_size} images)"):
            return beam_search(
                self.decoder,
                feats,
                bos_id=self.tokenizer.bos_id,
                eos_id=self.tokenizer.eos_id,
                beam_size=beam_size,
                max_len=max_len,
                length_penalty=length_penalty,
                constraints=constraints,
                return_attention=return_attention,
            )

    @torch.no_grad()
    def generate_samples(
        self,
        images_or_features: Any,
        *,
        n: int = 1,
        max_len: int = 20,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        constraints: Constraints | None = None,
        generator: torch.Generator | None = None,
    ) -> Samples:
        """``n`` sampled captions per image as token ids (``zoo.generation.sample``): rows
        ``i*n .. i*n+n-1`` are image i's. In the mode the model is in (self-critical rollouts call it)."""
        feats = self._features(images_or_features)
        with self.blamed("decoder", f"sampling ({n} per image, {feats.batch_size} images)"):
            return sample(
                self.decoder,
                feats,
                bos_id=self.tokenizer.bos_id,
                eos_id=self.tokenizer.eos_id,
                pad_id=self.tokenizer.pad_id,
                n=n,
                max_len=max_len,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator,
                constraints=constraints,
            )

    @torch.no_grad()
    def generate(
        self,
        images_or_features: Any,
        beam_size: int = 3,
        max_len: int = 20,
        length_penalty: float = 1.0,
        *,
        sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        n: int = 1,
        min_len: int = 0,
        no_repeat_ngram: int = 0,
        suppress_unk: bool = False,
        bad_endings: bool = False,
        generator: torch.Generator | None = None,
        return_attention: bool = False,
    ) -> list[str] | list[list[str]] | list[CaptionAttention]:
        """Captions for images, in eval mode: PIL images, paths (str or ``Path``), uint8 arrays (H, W, C),
        a list of those (each goes through the encoder's eval transform, ``model.transform()``), a float
        tensor batch (B, 3, H, W) already transformed, or precomputed ``Features``. A single image is a
        batch of one; anything else is a ``ZooError`` naming what was passed (``zoo.data.images``).

        Beam search by default (``beam_size=1`` is greedy); ``sample=True`` draws captions instead, with
        ``temperature``, ``top_k``, ``top_p`` and ``n`` captions per image (``generator`` makes the draws
        reproducible). The constraints ``min_len``, ``no_repeat_ngram``, ``suppress_unk`` and
        ``bad_endings`` apply to both (``zoo.generation.constraints``). Every setting is checked before decoding
        (``zoo.generation.options.DecodingOptions``: a ``DecodingOptionError`` naming the option and its flag).

        Returns one string per image; with ``n > 1``, one list of ``n`` strings per image, most probable
        first (log-probability / length ** ``length_penalty``, as beam search ranks).

        ``return_attention=True`` (beam search with attention decoders only, e.g. ``gru-attn``; others
        raise a ZooError naming the decoder): a ``zoo.generation.attention.CaptionAttention`` per image instead of a
        string: the caption, one label per generated token, their (T, N) weights over the grid and its
        (h, w)."""
        options = DecodingOptions(
            beam_size=beam_size, max_len=max_len, length_penalty=length_penalty, sample=sample,
            temperature=temperature, top_k=top_k, top_p=top_p, n=n, min_len=min_len,
            no_repeat_ngram=no_repeat_ngram, suppress_unk=suppress_unk, bad_endings=bad_endings,
        ).check()
        if return_attention and sample:
            raise DecodingOptionError(
                "return_attention (--attention) works with beam search only; leave out sample (--sample)"
            )
        constraints = options.constraints(self.tokenizer)
        images_or_features = self._inputs(images_or_features)
        was_training = self.training
        self.eval()
        try:
            if not sample:
                hyps = self.generate_hypotheses(
                    images_or_features, beam_size, max_len, length_penalty, constraints,
                    return_attention=return_attention,
                )
            else:
                s = self.generate_samples(
                    images_or_features, n=n, max_len=max_len, temperature=temperature, top_k=top_k,
                    top_p=top_p, constraints=constraints, generator=generator,
                )
        finally:
            self.train(was_training)
        if not sample:
            if return_attention:
                size = None if isinstance(images_or_features, Features) else tuple(images_or_features.shape[-2:])
                return caption_attention(self, hyps, size)
            return [self.tokenizer.decode(h.tokens) for h in hyps]
        texts = self.tokenizer.decode_batch(s.tokens.tolist())
        if n == 1:
            return texts
        score = s.logprobs.double() / s.lengths.double().clamp(min=1) ** length_penalty
        order = score.view(-1, n).argsort(dim=1, descending=True, stable=True).tolist()
        return [[texts[i * n + j] for j in row] for i, row in enumerate(order)]

    def transform(self, train: bool = False) -> Any:
        return self.encoder.transform(train=train)

    @torch.no_grad()
    def caption_images(self, images: Sequence[Any], **kwargs: Any) -> list[str]:
        """Captions for PIL images (or anything else ``generate`` accepts): ``generate`` itself, kept for
        the callers written before it took images."""
        return self.generate(images, **kwargs)

    def num_parameters(self) -> dict[str, int]:
        enc = sum(p.numel() for p in self.encoder.parameters())
        dec = sum(p.numel() for p in self.decoder.parameters())
        return {"encoder": enc, "decoder": dec, "total": enc + dec}


# -- a model's attention, caption by caption (``generate(..., return_attention=True)``, the --attention figure,
# the report's strips): here because it needs the model's tokenizer and encoder, which generation never sees
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
    batch = model.images(images)
    found = model.generate(batch, return_attention=True, **generate_kwargs)
    views = model.encoder.unnormalize(batch).permute(0, 2, 3, 1).cpu()
    return list(zip(views, found))  # type: ignore[arg-type]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_attends_model(model: "CaptionModel") -> None:
    """A ZooError naming the model's decoder when it has no attention to show."""
    check_attends(model.decoder, model.config.get("decoder", {}).get("name"))
