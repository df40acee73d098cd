"""The tokenizer interface. Every tokenizer uses the same special ids, so decoders, beam search and
checkpoints never need to ask: pad=0, bos=1, eos=2, unk=3."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Iterable, Sequence

import torch

from zoo.errors import ZooError

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


class Tokenizer(ABC):
    """Text ↔ token ids. Trained from captions; serialised to bytes that go inside the checkpoint."""

    pad_id: ClassVar[int] = PAD_ID
    bos_id: ClassVar[int] = BOS_ID
    eos_id: ClassVar[int] = EOS_ID
    unk_id: ClassVar[int] = UNK_ID
    #: the registry name, written into checkpoints so ``zoo.load`` can rebuild the tokenizer. Optional: when
    #: empty, ``create_model`` records the name the class is registered under (``registry.add_tokenizer``);
    #: a tokenizer whose class is not registered at all is refused there, since it could never be loaded.
    name: ClassVar[str] = ""

    @classmethod
    @abstractmethod
    def train(cls, captions: Iterable[str], **options: object) -> "Tokenizer":
        """Learn a vocabulary from raw captions."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without <bos>/<eos>."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``: stops at <eos>, drops <pad>/<bos>."""

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def to_bytes(self) -> bytes:
        """Everything needed to rebuild this tokenizer (kept in the checkpoint)."""

    @classmethod
    @abstractmethod
    def from_bytes(cls, data: bytes) -> "Tokenizer": ...

    def options(self) -> dict:
        """The options it was trained with (recorded in configs and the leaderboard)."""
        return {}

    # -- shared helpers -------------------------------------------------------------------------------
    def batch_encode(self, texts: Sequence[str], max_len: int | None = None) -> torch.Tensor:
        """(B, T+1) ids: <bos> w1 .. wn <eos> <pad>...; captions longer than ``max_len`` tokens are cut
        (the <eos> is kept). Inputs for teacher forcing are ``[:, :-1]``, targets ``[:, 1:]``."""
        seqs = []
        for t in texts:
            ids = self.encode(t)
            if max_len is not None:
                ids = ids[:max_len]
            seqs.append([self.bos_id, *ids, self.eos_id])
        width = max(len(s) for s in seqs)
        out = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return out

    def content_ids(self, ids: Iterable[int]) -> list[int]:
        """The ids a ``decode`` renders: those before the first <eos>, without <pad>/<bos>. An id outside
        the vocabulary means the ids came from a model built for another tokenizer: that is an error."""
        n = self.vocab_size
        keep: list[int] = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            if not 0 <= i < n:
                raise ZooError(
                    f"{self.name or type(self).__name__} tokenizer: id {i} is outside its vocabulary of {n}; "
                    "the ids come from a model built for another tokenizer"
                )
            keep.append(i)
        return keep

    def decode_batch(self, batch: Iterable[Sequence[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]
