"""Caption generation, as a package models use (like transformers' ``generation/``).

- ``beam``: the one batched beam search every decoder gets, through the decoder contract only, and its
  plain one-image-at-a-time reference.
- ``sampling``: the batched sampler (temperature, top-k, nucleus; the rollouts of self-critical training).
- ``checks``: decoding settings refused before any image is decoded, naming the flag.
- ``constraints``: decoding constraints both searches share (min length, no repeated n-gram, no ``<unk>``, bad
  endings).
- ``options``: :class:`DecodingOptions`, every decoding setting, checked by flag, recorded with scores,
  and the shared command-line flags.
- ``attention``: :class:`CaptionAttention`, what ``generate(..., return_attention=True)`` returns.

May import: ``zoo.contracts``, ``zoo.errors``, torch. A model (``zoo.models``) calls into here; nothing
here imports a model.
"""

from zoo.generation.beam import Hypothesis, beam_search, beam_search_reference
from zoo.generation.sampling import Samples, sample

__all__ = ["Hypothesis", "Samples", "beam_search", "beam_search_reference", "sample"]
