"""Small builders shared by tests."""

from __future__ import annotations

import torch

import zoo

CAPTIONS = [
    "a red circle above a blue square",
    "two green triangles on the left",
    "a small yellow star in the corner",
    "a blue square left of a red circle",
    "three shapes on a white background",
]


def tiny_tokenizer():
    return zoo.create_tokenizer("word", CAPTIONS, min_count=0)


def tiny_model(decoder: str = "gru", encoder: str = "resnet10t", **decoder_kwargs):
    torch.manual_seed(0)
    opts = {"embed_size": 16, "hidden_size": 24, **decoder_kwargs}
    return zoo.create_model(
        encoder=encoder,
        decoder=decoder,
        tokenizer=tiny_tokenizer(),
        encoder_kwargs={"img_size": 32},
        decoder_kwargs=opts,
    )


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)
