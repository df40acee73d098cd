"""Models: the parts assembled, built by name, saved and loaded.

- ``caption_model``: :class:`CaptionModel` (encoder + decoder + tokenizer; ``generate`` through
  ``zoo.generation``; its captions' attention, for hypotheses and for PIL images).
- ``factory``: ``create_model`` (the front door, by recipe or by parts), ``list_models``/``list_names``.
- ``builder``: one part built by its registered name (``create_encoder``/``create_decoder``/
  ``create_tokenizer``, a tokenizer rebuilt from a checkpoint), options checked, the decoder probed.
- ``checkpoint``: one-file ``.safetensors`` checkpoints with config and tokenizer inside (never pickle).
- ``hub``: a recipe's trained weights downloaded once, sha256-checked, loaded.

May import: ``zoo.registry``, ``zoo.contracts``, ``zoo.generation``, ``zoo.files``, ``zoo.errors``, torch.
"""
