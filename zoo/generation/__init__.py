"""Caption generation, as a package models use (like transformers' ``generation/``).

- ``search``: the one batched beam search (and its one-image reference) and the batched sampler every
  decoder gets, through the decoder contract only.
- ``constraints``: decoding constraints both share (min length, no repeated n-gram, no ``<unk>``, bad
  endings).
- ``options``: :class:`DecodingOptions`, every decoding setting, checked by flag, recorded with scores,
  and the shared command-line flags.
- ``attention``: :class:`CaptionAttention`, what ``generate(..., return_attention=True)`` returns.

May import: ``zoo.contracts``, ``zoo.errors``, torch. A model (``zoo.models``) calls into here; nothing
here imports a model.
"""

from zoo.generation.search import Hypothesis, Samples, beam_search, beam_search_reference, sample

__all__ = ["Hypothesis", "Samples", "beam_search", "beam_search_reference", "sample"]
