"""What an epoch runs over: every (image, caption) pair of the training set, tokenised once
(:class:`PairIndex`), in an order that is a pure function of (seed, epoch), so a resumed run draws the same
batches as one never interrupted; and, with the encoder in the loop, each batch's images decoded in
DataLoader workers (:func:`image_batches`)."""

from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.utils.data

from zoo.data.datasets import ImageDataset
from zoo.errors import ZooError


class PairIndex:
    """All (image, caption) pairs of a data set, tokenised once."""

    def __init__(self, dataset: Any, tokenizer: Any, max_len: int) -> None:
        image_of, texts = [], []
        for i, item in enumerate(dataset):
            for c in item.captions:
                image_of.append(i)
                texts.append(c)
        if not texts:
            raise ZooError(f"data set {dataset.name!r} split {dataset.split!r} has no captions to train on")
        self.image_of = torch.tensor(image_of, dtype=torch.long)
        self.tokens = tokenizer.batch_encode(texts, max_len=max_len)

    def __len__(self) -> int:
        return len(self.image_of)

    def order(self, seed: int, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        return torch.randperm(len(self), generator=g)


def image_batches(
    dataset: Any, transform: Any, pairs: PairIndex, batches: list[torch.Tensor], num_workers: int, pin: bool
) -> Iterator[torch.Tensor]:
    """The images of each batch's pairs, decoded in DataLoader workers (encoder in the loop)."""
    loader = torch.utils.data.DataLoader(
        ImageDataset(dataset, transform),
        batch_sampler=[pairs.image_of[b].tolist() for b in batches],  # one worker task per batch
        num_workers=num_workers,
        generator=torch.Generator(),  # leave the global RNG stream alone
        pin_memory=pin,
    )
    for _, images in loader:
        yield images
