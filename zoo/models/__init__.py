"""Models: the parts assembled, built by name, saved and loaded.

- ``caption_model``: :class:`CaptionModel` (encoder + decoder + tokenizer; ``generate`` through
  ``zoo.generation``).
- ``factory``: ``create_model`` (the front door), ``create_encoder``/``create_decoder``/``create_tokenizer``,
  ``list_models``/``list_names``.
- ``checkpoint``: one-file ``.safetensors`` checkpoints with config and tokenizer inside (never pickle),
  verified downloads, models from recipes.

May import: ``zoo.registry``, ``zoo.contracts``, ``zoo.generation``, ``zoo.files``, ``zoo.errors``, torch.
"""
