"""Captions for a data set's images, as evaluation and training's validation both need them: batched,
decoded in DataLoader workers, bad images skipped when asked; the quick tokenisation validation and
caption statistics compare captions with; and the validation score training reports."""

from __future__ import annotations

import re
from typing import Any

import torch
from tqdm.auto import tqdm

from zoo.data.datasets import ImageDataset, collate_skip_none
from zoo.evaluation.cider import CiderD
from zoo.models.caption_model import CaptionModel


def simple_tokenize(text: str) -> str:
    """Lower-case, punctuation stripped: the fast stand-in for the PTB tokenizer during validation."""
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


@torch.no_grad()
def generate_for_items(
    model: CaptionModel,
    dataset: Any,
    indices: list[int],
    beam_size: int,
    max_len: int,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    length_penalty: float = 1.0,
    skip_bad_images: bool = False,
    progress: bool = False,
    decoding: dict[str, Any] | None = None,
) -> dict[int, Any]:
    """Captions for ``dataset[indices]``, streamed in batches through DataLoader workers. ``decoding``:
    more ``CaptionModel.generate`` keywords (sampling, constraints; with ``n > 1`` each value is the list
    of an image's ``n`` captions, most probable first)."""

    model.eval()
    ds = ImageDataset(dataset, model.encoder.transform(train=False), skip_bad_images=skip_bad_images)
    sub = torch.utils.data.Subset(ds, indices)
    # its own generator: evaluating in the middle of training must not draw from the global RNG
    loader = torch.utils.data.DataLoader(sub, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=collate_skip_none, generator=torch.Generator(),
                                         pin_memory=device.type == "cuda")
    out: dict[int, str] = {}
    with tqdm(total=len(indices), desc="decode", unit="img", disable=not progress) as bar:
        for idx, images in loader:
            if images is None:  # every image of this batch was bad (and skipped)
                continue
            caps = model.generate(images.to(device, non_blocking=True), beam_size=beam_size, max_len=max_len,
                                  length_penalty=length_penalty, **(decoding or {}))
            for i, c in zip(idx.tolist(), caps):
                out[int(i)] = c
            bar.update(len(idx))
    return out


@torch.no_grad()
def validation_score(
    model: CaptionModel,
    dataset: Any,
    images: int,
    beam_size: int,
    max_len: int,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
) -> float:
    """CIDEr-D of ``model``'s captions of the first ``images`` images of ``dataset`` (0 for fewer than two),
    with our vectorised CIDEr-D and a simple tokenisation (the official PTB protocol is for ``zoo eval``):
    the validation score of ``zoo train`` (``zoo.training.loop.validate``)."""
    n = min(len(dataset), images)
    subset = [dataset[i] for i in range(n)]
    caps = generate_for_items(model, dataset, list(range(n)), beam_size, max_len, device,
                              batch_size=batch_size, num_workers=num_workers)
    gts = {i: [simple_tokenize(c) for c in it.captions] for i, it in enumerate(subset)}
    res = {i: [simple_tokenize(caps[i])] for i in range(n)}
    if n < 2:
        return 0.0
    score, _ = CiderD().compute_score(gts, res)
    return float(score)
