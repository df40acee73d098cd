"""Data: caption data sets, image decoding with clear errors, and the feature cache.

- ``datasets``: :class:`Item`, :class:`CaptionDataset`, ``load_dataset`` (by registered name), image
  opening with pixel limits, the torch ``ImageDataset`` that skips bad images.
- ``images``: what ``CaptionModel.generate`` accepts as images (PIL, paths, uint8 arrays, lists, tensors) made
  into the batch an encoder reads, and the error naming anything else.
- ``feature_cache``: encoder features computed once per (encoder, data, transform) and shared by runs.

May import: ``zoo.registry``, ``zoo.contracts``, ``zoo.errors``, torch, PIL, numpy.
"""

from zoo.data.datasets import (
    CaptionDataset,
    ImageDataset,
    Item,
    collate_skip_none,
    drop_bad_images,
    int_option,
    load_dataset,
    open_image,
    read_json,
)

__all__ = [
    "CaptionDataset",
    "ImageDataset",
    "Item",
    "collate_skip_none",
    "drop_bad_images",
    "int_option",
    "load_dataset",
    "open_image",
    "read_json",
]
