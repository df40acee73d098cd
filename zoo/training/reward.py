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

Two *reference conventions* (:data:`CONVENTIONS`, the ``scst`` objective's ``reference_convention``) say
how the training captions become references and document frequencies. ``zoo`` (the default): every
reference is the caption cut at ``max_len`` tokens with its <eos> appended, and the frequencies are counted
over those same cut references. ``ruotianluo``: what ruotianluo's self-critical.pytorch pipeline (whose
numbers the field quotes) feeds its ``CiderD``: a reference is the caption cut at ``max_len`` tokens
(``prepro_labels.py``'s label array), with <eos> only when the caption was *shorter* than ``max_len``
(``array_to_str`` stops at the first 0 of the zero-padded array, and a full array has none), while the
frequencies come from the *uncut* captions, each with <eos> (``prepro_ngrams.py``). See ``docs/scst.md``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zoo.evaluation.cider import CiderD, DocumentFrequency

_CACHE: dict[tuple, "CiderReward"] = {}


@dataclass(frozen=True)
class ReferenceConvention:
    """How training captions become a reward's references and document frequencies."""

    #: a caption of ``max_len`` tokens or more (cut there, or filling the limit) still gets its <eos>
    eos_at_limit: bool
    #: the document frequencies are counted over the uncut captions (else over the cut references)
    df_uncut: bool
    #: what the convention is, in words (``zoo info scst``, docs)
    about: str


#: ``reference_convention`` values of the ``scst`` objective; ``zoo`` is the default
CONVENTIONS: dict[str, ReferenceConvention] = {
    "zoo": ReferenceConvention(True, False, "references cut at max_len, each with <eos>; frequencies over "
                                            "the same cut references"),
    "ruotianluo": ReferenceConvention(False, True, "references cut at max_len, <eos> only on those shorter "
                                                   "than max_len; frequencies over the uncut captions with "
                                                   "<eos> (self-critical.pytorch)"),
}


class CiderReward:
    """CIDEr-D on token ids against fixed training references.

    ``ref_ids`` is every reference of every image concatenated (ids without <bos>, with their <eos> when
    ``eos``), ``ref_lengths`` the ids per reference, ``refs_per_image`` how many references each image has
    (images in order, references of one image consecutive). Any id in 0..vocab_size-1 may occur (a model
    may sample <pad> or <bos>): inside, ids are shifted by one, since the CIDEr-D machinery reserves 0.
    ``df_ids``/``df_lengths``: other sentences to count the document frequencies over (the same number per
    image as the references, e.g. the uncut captions); by default the references themselves."""

    def __init__(self, ref_ids: np.ndarray, ref_lengths: np.ndarray, refs_per_image: np.ndarray, vocab_size: int,
                 n: int = 4, sigma: float = 6.0, words: list[str] | None = None,
                 df_ids: np.ndarray | None = None, df_lengths: np.ndarray | None = None) -> None:
        self.ref_ids = np.ascontiguousarray(ref_ids, dtype=np.int64) + 1
        self.ref_lengths = np.asarray(ref_lengths, dtype=np.int64)
        self.refs_per_image = np.asarray(refs_per_image, dtype=np.int64)
        self.first_ref = np.cumsum(self.refs_per_image) - self.refs_per_image  # per image
        self.ref_start = np.cumsum(self.ref_lengths) - self.ref_lengths  # per reference
        self.vocab_size = int(vocab_size)
        if df_ids is None:
            df_ids, df_lengths = self.ref_ids, self.ref_lengths
        else:
            df_ids = np.ascontiguousarray(df_ids, dtype=np.int64) + 1
            df_lengths = np.asarray(df_lengths, dtype=np.int64)
        self.df = DocumentFrequency.from_token_ids(df_ids, df_lengths, self.refs_per_image,
                                                   self.vocab_size + 1, words=None if words is None else ["", *words], n=n)
        self.scorer = CiderD(n=n, sigma=sigma, df=self.df)
        #: training-set image index → document (``from_pairs``; None: images are documents already)
        self.image_slot: np.ndarray | None = None

    @classmethod
    def from_pairs(cls, pair_tokens: torch.Tensor, pair_images: torch.Tensor, *, pad_id: int, eos_id: int,
                   vocab_size: int, eos: bool = True, n: int = 4, words: list[str] | None = None,
                   convention: str = "zoo", full_tokens: torch.Tensor | None = None,
                   max_len: int | None = None) -> "CiderReward":
        """From the loop's tokenised (image, caption) pairs (``<bos> … <eos> pad`` rows, cut as training
        cuts them); images without a caption get no document. ``convention`` (:data:`CONVENTIONS`) other
        than ``zoo`` also needs ``full_tokens``, the same pairs tokenised uncut (same rows, same layout),
        and ``max_len``, the cut in tokens. Cached per process on the pairs' bytes and the convention."""
        conv = CONVENTIONS[convention]
        tokens = pair_tokens.cpu().numpy()
        images = pair_images.cpu().numpy().astype(np.int64)
        full = None
        if not conv.eos_at_limit or conv.df_uncut:
            if full_tokens is None or max_len is None:
                raise ValueError(f"reference convention {convention!r} needs the uncut captions and max_len")
            full = full_tokens.cpu().numpy()
            if len(full) != len(tokens):
                raise ValueError(f"{len(full)} uncut captions for {len(tokens)} (image, caption) pairs")
        key = (hashlib.sha1(tokens.tobytes() + images.tobytes() + (b"" if full is None else full.tobytes())).hexdigest(),
               tokens.shape, eos, n, vocab_size, eos_id, convention, max_len)
        if key in _CACHE:
            return _CACHE[key]
        order = np.argsort(images, kind="stable")
        body, lengths = _sentences(tokens[order], pad_id, eos_id, eos)
        df_ids = df_lengths = None
        if full is not None:
            full_body, full_lengths = _sentences(full[order], pad_id, eos_id, eos)
            if not conv.eos_at_limit and eos:  # <eos> only on captions shorter than the cut
                words_in_full = full_lengths - 1
                lengths = lengths - (words_in_full >= max_len)
            if conv.df_uncut:
                df_ids, df_lengths = _concatenated(full_body, full_lengths), full_lengths
        n_images = int(images.max()) + 1
        per_image = np.bincount(images, minlength=n_images)
        reward = cls(_concatenated(body, lengths), lengths, per_image[per_image > 0], vocab_size, n=n, words=words,
                     df_ids=df_ids, df_lengths=df_lengths)
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


def _sentences(rows: np.ndarray, pad_id: int, eos_id: int, eos: bool) -> tuple[np.ndarray, np.ndarray]:
    """``<bos> … <eos> pad`` rows → (the rows without <bos>, the ids to keep per row: the words and, with
    ``eos``, the <eos>)."""
    body = rows[:, 1:]
    lengths = (body != pad_id).sum(1)
    if not eos:
        ends = body[np.arange(len(body)), np.maximum(lengths - 1, 0)] == eos_id
        lengths = lengths - ends
    return body, lengths


def _concatenated(body: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The first ``lengths[i]`` ids of each row of ``body``, concatenated."""
    return body[np.arange(body.shape[1])[None, :] < lengths[:, None]]


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
