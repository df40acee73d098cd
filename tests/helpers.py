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


def fill_disk(folder, leave: int = 0):
    """Fill the file system holding ``folder`` (a ``small_disk``) until at most ``leave`` bytes are free,
    with one file ``folder/filler``; returns its path (delete it to free the space again)."""
    import os
    from pathlib import Path

    path = Path(folder) / "filler"
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(path, "ab") as fh:
        block = b"\0" * (1 << 16)
        remaining = max(free - leave, 0)
        try:
            while remaining > 0:
                remaining -= fh.write(block[: min(len(block), remaining)])
            fh.flush()
        except OSError:  # full already
            pass
    return path
