"""Caption rewards on token ids, for self-critical training: CIDEr-D (and BLEU-4) of sampled captions
against each image's training references.

Why token ids: a reward is computed every step on ``images × samples`` captions; decoding them to strings
and splitting them again would cost more than the vectorised CIDEr-D itself. :class:`CiderReward` lays the
ids out exactly as :class:`zoo.evaluation.cider.CiderD` lays out words and runs the same machinery
(:meth:`CiderD.score_token_ids`), so a reward equals ``CiderD`` on the captions written as words to 1e-9
(``tests/test_scst.py``). The document frequencies come from the *training* references, built once per
run (and cached for the process, keyed by the references' bytes), with ``ref_len = log(training images)``,
as the reference self-critical implementations do; the end-of-sentence token counts as a word (it
rewards captions that end where references end, not mid-phrase).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from zoo.evaluation.cider import CiderD, DocumentFrequency

_CACHE: dict[tuple, "CiderReward"] = {}


class CiderReward:
    """CIDEr-D on token ids against fixed training references.

    ``ref_ids`` is every reference of every image concatenated (ids without <bos>, with their <eos> when
    ``eos``), ``ref_lengths`` the ids per reference, ``refs_per_image`` how many references each image has
    (images in order, references of one image consecutive). Any id in 0..vocab_size-1 may occur (a model
    may sample <pad> or <bos>): inside, ids are shifted by one, since the CIDEr-D machinery reserves 0."""

    def __init__(self, ref_ids: np.ndarray, ref_lengths: np.ndarray, refs_per_image: np.ndarray, vocab_size: int,
                 n: int = 4, sigma: float = 6.0, words: list[str] | None = None) -> None:
        self.ref_ids = np.ascontiguousarray(ref_ids, dtype=np.int64) + 1
        self.ref_lengths = np.asarray(ref_lengths, dtype=np.int64)
        self.refs_per_image = np.asarray(refs_per_image, dtype=np.int64)
        self.first_ref = np.cumsum(self.refs_per_image) - self.refs_per_image  # per image
        self.ref_start = np.cumsum(self.ref_lengths) - self.ref_lengths  # per reference
        self.vocab_size = int(vocab_size)
        self.df = DocumentFrequency.from_token_ids(self.ref_ids, self.ref_lengths, self.refs_per_image,
                                                   self.vocab_size + 1, words=None if words is None else ["", *words], n=n)
        self.scorer = CiderD(n=n, sigma=sigma, df=self.df)
        #: training-set image index → document (``from_pairs``; None: images are documents already)
        self.image_slot: np.ndarray | None = None

    @classmethod
    def from_pairs(cls, pair_tokens: torch.Tensor, pair_images: torch.Tensor, *, pad_id: int, eos_id: int,
                   vocab_size: int, eos: bool = True, n: int = 4, words: list[str] | None = None) -> "CiderReward":
        """From the loop's tokenised (image, caption) pairs (``<bos> … <eos> pad`` rows, cut as training
        cuts them); images without a caption get no document. Cached per process on the pairs' bytes."""
        tokens = pair_tokens.cpu().numpy()
        images = pair_images.cpu().numpy().astype(np.int64)
        key = (hashlib.sha1(tokens.tobytes() + images.tobytes()).hexdigest(), tokens.shape, eos, n, vocab_size, eos_id)
        if key in _CACHE:
            return _CACHE[key]
        order = np.argsort(images, kind="stable")
        body = tokens[order, 1:]  # drop <bos>
        lengths = (body != pad_id).sum(1)
        if not eos:
            ends = body[np.arange(len(body)), np.maximum(lengths - 1, 0)] == eos_id
            lengths = lengths - ends
        keep = np.arange(body.shape[1])[None, :] < lengths[:, None]
        n_images = int(images.max()) + 1
        per_image = np.bincount(images, minlength=n_images)
        reward = cls(body[keep], lengths, per_image[per_image > 0], vocab_size, n=n, words=words)
        reward.image_slot = np.cumsum(per_image > 0) - 1  # training-set image index → document
        _CACHE.clear()  # one run's table at a time: COCO's is large
        _CACHE[key] = reward
        return reward

    def digest(self) -> str:
        """A hash of the document-frequency table (DDP: every rank must hold the same one)."""
        h = hashlib.sha1()
        for k, c in zip(self.df.keys, self.df.counts):
            h.update(k.tobytes())
            h.update(np.asarray(c, dtype=np.float64).tobytes())
        h.update(str(self.df.size).encode())
        return h.hexdigest()

    def documents(self, images: np.ndarray) -> np.ndarray:
        """Document index of training-set images."""
        return self.image_slot[images] if self.image_slot is not None else np.asarray(images)

    def __call__(self, cand_ids: np.ndarray, cand_lengths: np.ndarray, images: np.ndarray) -> np.ndarray:
        """CIDEr-D of each candidate (concatenated ids ``cand_ids``, ``cand_lengths`` per candidate) against
        the references of training image ``images[i]``; float64, one per candidate."""
        docs = self.documents(np.asarray(images, dtype=np.int64))
        cand_lengths = np.asarray(cand_lengths, dtype=np.int64)
        if len(docs) == 0:
            return np.zeros(0)
        n_refs = self.refs_per_image[docs]
        per_doc = n_refs + 1
        # the sentences of document r: its candidate, then its image's references
        sent_total = int(per_doc.sum())
        doc_first = np.cumsum(per_doc) - per_doc
        is_cand = np.zeros(sent_total, dtype=bool)
        is_cand[doc_first] = True
        ref_sent = np.repeat(self.first_ref[docs] - (doc_first + 1), n_refs) + np.flatnonzero(~is_cand)
        # lay the sentences out: each candidate's ids, then its image's references' ids
        lengths = np.empty(sent_total, dtype=np.int64)
        lengths[doc_first] = cand_lengths
        lengths[~is_cand] = self.ref_lengths[ref_sent]
        out_start = np.cumsum(lengths) - lengths
        ids = np.empty(int(lengths.sum()), dtype=np.int64)
        cand_out = np.repeat(out_start[doc_first] - (np.cumsum(cand_lengths) - cand_lengths), cand_lengths)
        ids[cand_out + np.arange(cand_out.size)] = np.asarray(cand_ids, dtype=np.int64) + 1
        ref_len = self.ref_lengths[ref_sent]
        shift = np.repeat(out_start[~is_cand] - (np.cumsum(ref_len) - ref_len), ref_len)
        src = np.repeat(self.ref_start[ref_sent] - (np.cumsum(ref_len) - ref_len), ref_len)
        k = np.arange(shift.size)
        ids[shift + k] = self.ref_ids[src + k]
        return self.scorer.score_token_ids(ids, lengths, n_refs)

    def references(self, image: int) -> list[np.ndarray]:
        """The reference id sequences of one training image."""
        d = int(self.documents(np.array([image]))[0])
        first, count = self.first_ref[d], self.refs_per_image[d]
        return [self.ref_ids[self.ref_start[j]: self.ref_start[j] + self.ref_lengths[j]] - 1 for j in range(first, first + count)]


def bleu4(cands: list[np.ndarray], refs: list[list[np.ndarray]]) -> np.ndarray:
    """Sentence BLEU-4 of each candidate against its references (pycocoevalcap's ``BleuScorer``, the
    "closest" reference length, on the ids written as words), the optional second term of the reward."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer  # lazy: only a BLEU term uses pycocoevalcap

    scorer = BleuScorer(n=4)
    for c, rs in zip(cands, refs):
        scorer += (" ".join(map(str, c.tolist())), [" ".join(map(str, r.tolist())) for r in rs])
    _, scores = scorer.compute_score(option="closest", verbose=0)
    return np.asarray(scores[3], dtype=np.float64)


def split_rows(tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(ids concatenated, lengths) of the first ``lengths[i]`` tokens of each row."""
    t = tokens.cpu().numpy()
    n = lengths.cpu().numpy().astype(np.int64)
    keep = np.arange(t.shape[1])[None, :] < n[:, None]
    return t[keep].astype(np.int64), n


def as_numpy(x: Any) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
