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


class TableDecoder(zoo.Decoder):
    """A decoder whose next-token logits are a fixed (V, V) table row of the previous token, so the
    probability of any sequence is known exactly; the image only sets the batch size."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__(table.shape[0], 4)
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, features, tokens):
        return self.table[tokens]

    def init_state(self, memory):
        return torch.zeros(memory.batch_size, 1)

    def step(self, prev, state, memory):
        return self.table[prev], state
