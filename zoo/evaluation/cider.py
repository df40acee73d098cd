"""CIDEr-D, exact and vectorised: a drop-in for ``pycocoevalcap.cider.Cider``.

Why it exists: pycocoevalcap builds a Python dict of n-gram counts for every caption and loops over them,
so scoring the 40,504 COCO val2014 images takes ~25 s. That is too slow for a self-critical training
reward and for repeated evaluation. :class:`CiderD` computes the same numbers (per image within 1e-9, in
practice ~1e-15; see ``tests/test_cider.py``) with array operations, about 40x faster on one core
(``benchmarks/bench_cider.py``: 0.6-0.7 s for val2014). Tokens are ``str.split()`` words, as in
pycocoevalcap; ASCII text is split and numbered over bytes with numpy, other text with a dict.

The formula, as pycocoevalcap implements it (``cider_scorer.py``), for a candidate ``c`` and references
``r_1..r_m`` of one image:

* ``g_k(s)``: the k-grams of sentence ``s`` (``s.split()``), k = 1..n, with counts ``tf``;
* ``df(g)``: the number of *images* whose references contain ``g``; ``ref_len = log(number of images)``;
  the weight of ``g`` in ``s`` is ``w = tf * (ref_len - log(max(1, df(g))))``;
* ``sim_k(c, r) = sum_g min(w_c, w_r) * w_r / (|w_c| |w_r|)`` (no division when a norm is 0), times the
  length penalty ``exp(-delta**2 / (2 sigma**2))`` where ``delta`` is the difference of the two sentences'
  *bigram counts* (pycocoevalcap counts ``length`` at n-gram index 1);
* ``CIDEr-D(c) = 10 * mean_k(sum_j sim_k(c, r_j)) / m``; the corpus score is the mean over images, and the
  per-image scores come out in the order of ``gts``' keys.

How (the trick in one paragraph): every token gets a *virtual position*
``v = ((image << lb | sentence) << ob) | offset`` where sentence 0 of an image is its candidate. Sorting
all positions by (k-gram, v) makes each k-gram a contiguous run, and inside it each image and each sentence
contiguous too, so the XOR of neighbouring ``v`` says whether they share a sentence, an image, or neither.
Term frequencies are run lengths, document frequencies count image changes among references, and the
references matching the candidate are the ones that follow it inside an (n-gram, image) block; sums per
sentence are ``np.bincount``. Order 1 is a radix argsort of the token ids; order k re-sorts the packed
key (rank of the (k-1)-gram, next token, v), which is already sorted by its high bits, so numpy's timsort
only merges short runs.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from zoo.errors import DataError

__all__ = ["CiderD", "DocumentFrequency", "SmallCorpusWarning", "SMALL_CORPUS"]

#: below this many images, document frequencies taken from the evaluated references are unreliable
SMALL_CORPUS = 50

# The packed sort key must fit in an unsigned 64-bit integer; tests lower this to force the fallback.
_KEY_BITS = 64


class SmallCorpusWarning(UserWarning):
    """CIDEr-D document frequencies come from very few images, so the scores are 0 or odd."""


def _bits(x: int) -> int:
    return max(1, int(x).bit_length())


# ---------------------------------------------------------------------------------------------------------
# Tokenisation: ``str.split`` semantics, into integer ids
# ---------------------------------------------------------------------------------------------------------

_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[i for i in range(128) if chr(i).isspace()]] = True
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)
_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xC2B2AE3D27D4EB4F)
_TABLE_BITS = 18


@dataclass
class _Tokens:
    """Sentences as token ids (1-based, 0 is padding), concatenated, with the tokens per sentence."""

    ids: np.ndarray
    lengths: np.ndarray
    vocab_size: int  # every id is < vocab_size
    _words: Callable[[], list[str]] = field(repr=False)

    def words(self) -> list[str]:
        """``words()[i]`` is the string of id ``i`` (index 0 is ``""``)."""
        return self._words()


def _tokenize(sentences: Sequence[str]) -> _Tokens:
    """Split every sentence like ``str.split()`` and number the distinct words."""
    try:
        text = " ".join(["", *sentences, " " * 8])  # a space before, nine after (for 8-byte reads)
    except TypeError:
        bad = next(s for s in sentences if not isinstance(s, str))
        raise DataError(f"captions must be strings, got {type(bad).__name__} {bad!r}") from None
    if text.isascii():
        return _tokenize_ascii(sentences, text.encode("ascii"))
    return _tokenize_python(sentences)


def _tokenize_python(sentences: Sequence[str]) -> _Tokens:
    vocab: dict[str, int] = {}
    ids: list[int] = []
    lengths = np.empty(len(sentences), dtype=np.int64)
    for i, s in enumerate(sentences):
        words = s.split()
        lengths[i] = len(words)
        ids.extend(vocab.setdefault(w, len(vocab) + 1) for w in words)
    size = len(vocab) + 1
    words_list = ["", *vocab]
    return _Tokens(np.array(ids, dtype=_id_dtype(size)), lengths, size, lambda: words_list)


def _id_dtype(vocab_size: int) -> type:
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def _tokenize_ascii(sentences: Sequence[str], raw: bytes) -> _Tokens:
    """Vectorised over bytes: word boundaries from a whitespace table, each word's bytes as 64-bit chunks,
    and ids from a hash table that checks every word against the slot's owner (exact; the few words that
    lose a slot to another word are numbered with a dict). ``raw`` is the sentences joined by spaces, with
    one space before and nine after."""
    buf = np.frombuffer(raw, dtype=np.uint8)
    space = buf <= 32  # exact unless there are control characters, which are rare
    if (buf < 32).any():
        space = _ASCII_SPACE[buf]
    edges = np.flatnonzero(space[1:] != space[:-1])
    edges += 1
    starts = edges[0::2]
    length = edges[1::2] - starts
    chars = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
    first_char = np.cumsum(chars + 1) - chars  # byte offset of each sentence in ``raw``
    lengths = np.diff(np.searchsorted(starts, first_char), append=len(starts)).astype(np.int64)
    if starts.size == 0:
        return _Tokens(np.zeros(0, np.uint16), lengths, 1, lambda: [""])

    # the 8 bytes starting at every byte, read in place (unaligned)
    view = np.ndarray((len(raw) - 7,), dtype="<u8", buffer=raw, strides=(1,))
    head = view[starts]
    head &= _LOW_BYTES[np.minimum(length, 8)]
    key = head * _MIX1
    key ^= length.astype(np.uint64) * _MIX2
    tails = []
    idx, offset = np.flatnonzero(length > 8), 8
    while idx.size:
        part = view[starts[idx] + offset] & _LOW_BYTES[np.minimum(length[idx] - offset, 8)]
        tails.append((idx, part))
        key[idx] = (key[idx] ^ part) * _MIX1
        offset += 8
        idx = idx[length[idx] > offset]

    size = 1 << _TABLE_BITS
    slot = (key >> np.uint64(64 - _TABLE_BITS)).astype(np.intp)
    owner_head = np.zeros(size, dtype=np.uint64)
    owner_len = np.zeros(size, dtype=np.int64)
    owner_head[slot] = head
    owner_len[slot] = length
    won = (owner_head[slot] == head) & (owner_len[slot] == length)
    for idx, part in tails:
        owner_part = np.zeros(size, dtype=np.uint64)
        owner_part[slot[idx]] = part
        won[idx] &= owner_part[slot[idx]] == part
    # Words that pass in one slot agree on length and every chunk, so they are the same word.
    used = np.zeros(size, dtype=bool)
    used[slot[won]] = True
    dense = np.cumsum(used)
    ids = dense[slot]
    n_won = int(dense[-1])
    lost = np.flatnonzero(~won)
    extra: dict[bytes, int] = {}
    if lost.size:  # a word loses everywhere it occurs, so these never share an id with a winner
        ids[lost] = [
            extra.setdefault(raw[s : s + n], n_won + 1 + len(extra))
            for s, n in zip(starts[lost].tolist(), length[lost].tolist())
        ]
    vocab_size = n_won + len(extra) + 1

    def words() -> list[str]:
        first = np.zeros(vocab_size, dtype=np.int64)
        first[ids[::-1]] = np.arange(ids.size - 1, -1, -1)
        out = [""]
        for i in first[1:].tolist():
            out.append(raw[starts[i] : starts[i] + length[i]].decode("ascii"))
        return out

    return _Tokens(ids.astype(_id_dtype(vocab_size)), lengths, vocab_size, words)


# ---------------------------------------------------------------------------------------------------------
# Layout: virtual positions v = ((doc << lb | sentence) << ob) | offset
# ---------------------------------------------------------------------------------------------------------


class _Layout:
    """Where every token sits (``v``), and the token ``j`` places after a virtual position: read from the
    tokens laid out sentence by sentence, each followed by ``n - 1`` zeros (compact, so cache-friendly)."""

    def __init__(self, tokens: _Tokens, sentences_per_doc: np.ndarray, n: int) -> None:
        lengths = tokens.lengths
        self.n_docs = len(sentences_per_doc)
        self.lb = _bits(int(sentences_per_doc.max()) - 1)
        self.ob = _bits(int(lengths.max(initial=0)) + n - 1)
        self.vb = _bits(self.n_docs - 1) + self.lb + self.ob
        self.n_vsent = self.n_docs << self.lb
        doc_start = np.cumsum(sentences_per_doc) - sentences_per_doc
        local = np.arange(len(lengths)) - np.repeat(doc_start, sentences_per_doc)
        vsent = (np.repeat(np.arange(self.n_docs), sentences_per_doc) << self.lb) | local
        self.vlen = np.zeros(self.n_vsent, dtype=np.int64)
        self.vlen[vsent] = lengths
        tok_start = np.cumsum(lengths) - lengths
        self.v = np.repeat((vsent << self.ob) - tok_start, lengths) + np.arange(tokens.ids.size)
        padded = lengths + n - 1
        pad_start = np.cumsum(padded) - padded
        self._padded = np.zeros(int(padded.sum()), dtype=tokens.ids.dtype)
        self._padded[np.repeat(pad_start - tok_start, lengths) + np.arange(tokens.ids.size)] = tokens.ids
        self._pad_start = np.zeros(self.n_vsent, dtype=np.int64)
        self._pad_start[vsent] = pad_start

    def next_token(self, v: np.ndarray, j: int) -> np.ndarray:
        """The token ``j`` (< n) places after each position in ``v``, 0 past the end of its sentence."""
        return self._padded[self._pad_start[v >> self.ob] + (v & ((1 << self.ob) - 1)) + j]


@dataclass
class _Order:
    """The k-gram occurrences sorted by (k-gram, v): ``newg`` marks the first of each k-gram, ``starts``
    indexes them, ``rank`` numbers the k-grams from 1; ``parent`` (rank of the (k-1)-gram, 0 for k=1) and
    ``last`` (final token) identify each k-gram."""

    k: int
    v: np.ndarray
    newg: np.ndarray
    starts: np.ndarray
    rank: np.ndarray
    parent: np.ndarray
    last: np.ndarray


def _walk(tokens: _Tokens, lay: _Layout, n: int) -> Iterator[_Order]:
    ids = tokens.ids
    if ids.size == 0:
        return
    perm = np.argsort(ids, kind="stable")  # radix sort for uint16 ids
    gram = ids[perm]
    v = lay.v[perm]
    newg = np.empty(v.size, dtype=bool)
    newg[0] = True
    np.not_equal(gram[1:], gram[:-1], out=newg[1:])
    starts = np.flatnonzero(newg)
    rank = np.cumsum(newg, dtype=np.int64)
    yield _Order(1, v, newg, starts, rank, np.zeros(starts.size, np.int64), gram[starts].astype(np.int64))
    tb = _bits(tokens.vocab_size - 1)
    for k in range(2, n + 1):
        nxt = lay.next_token(v, k - 1)
        keep = nxt != 0
        if not keep.any():
            return
        if _bits(int(rank[-1])) + tb + lay.vb <= _KEY_BITS:
            key = rank.view(np.uint64) << np.uint64(tb + lay.vb)
            shifted = nxt.astype(np.uint64)
            shifted <<= np.uint64(lay.vb)
            key |= shifted
            key |= v.view(np.uint64)
            key = key[keep]
            key.sort(kind="stable")  # keys are unique; "stable" picks timsort, fast on sorted runs
            v = (key & np.uint64((1 << lay.vb) - 1)).view(np.int64)
            gram = key >> np.uint64(lay.vb)
            newg = np.empty(v.size, dtype=bool)
            newg[0] = True
            np.not_equal(gram[1:], gram[:-1], out=newg[1:])
            starts = np.flatnonzero(newg)
            head = gram[starts]
            parent = (head >> np.uint64(tb)).view(np.int64)
            last = (head & np.uint64((1 << tb) - 1)).view(np.int64)
        else:
            hi, mid, v = rank[keep], nxt[keep], v[keep]
            order = np.lexsort((v, mid, hi))
            hi, mid, v = hi[order], mid[order], v[order]
            newg = np.empty(v.size, dtype=bool)
            newg[0] = True
            newg[1:] = (hi[1:] != hi[:-1]) | (mid[1:] != mid[:-1])
            starts = np.flatnonzero(newg)
            parent, last = hi[starts], mid[starts].astype(np.int64)
        rank = np.cumsum(newg, dtype=np.int64)
        yield _Order(k, v, newg, starts, rank, parent, last)


def _neighbours(o: _Order, lay: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """(same sentence as the previous occurrence, same document as the previous occurrence), both within
    one k-gram."""
    x = o.v[1:] ^ o.v[:-1]
    cont = ~o.newg[1:]
    same_sent = np.zeros(o.v.size, dtype=bool)
    same_doc = np.zeros(o.v.size, dtype=bool)
    same_sent[1:] = cont & (x < (1 << lay.ob))
    same_doc[1:] = cont & (x < (1 << (lay.ob + lay.lb)))
    return same_sent, same_doc


class _TermFrequencies:
    """Term frequencies above 1, by occurrence: ``repeated`` marks them, ``index`` (sorted) and ``count``
    list them; every other occurrence has tf = 1 (the common case)."""

    def __init__(self, same_sent: np.ndarray) -> None:
        self.repeated = same_sent.copy()
        self.repeated[:-1] |= same_sent[1:]  # a repeat and the occurrence before it
        self.index = np.flatnonzero(self.repeated)
        run = np.cumsum(~same_sent[self.index]) - 1
        self.count = np.bincount(run).astype(np.float64)[run]

    @cached_property
    def _slot(self) -> np.ndarray:
        return np.cumsum(self.repeated, dtype=np.int64) - 1  # each occurrence's position in ``index``

    def get(self, i: np.ndarray) -> np.ndarray:
        """tf of occurrences ``i``."""
        return np.where(self.repeated[i], self.count[self._slot[i]], 1.0)


def _term_frequencies(same_sent: np.ndarray) -> _TermFrequencies | None:
    return _TermFrequencies(same_sent) if same_sent.any() else None


# ---------------------------------------------------------------------------------------------------------
# Document frequencies from a fixed corpus (a training reward)
# ---------------------------------------------------------------------------------------------------------


#: tables longer than this are looked up through a :class:`_KeyIndex` rather than ``np.searchsorted``
_HASH_ABOVE = 1 << 14


class _KeyIndex:
    """Open-addressing hash of sorted, distinct, non-zero uint64 keys → their positions, built and probed
    with array operations (linear probing, load ≤ 1/2): about two memory reads per lookup where a binary
    search over a training corpus' million n-grams makes twenty."""

    def __init__(self, keys: np.ndarray) -> None:
        self.bits = _bits(2 * max(len(keys), 1) - 1) + 1
        size = 1 << self.bits
        self.slot_key = np.zeros(size, dtype=np.uint64)  # 0 = empty (no key is 0)
        self.slot_pos = np.full(size, -1, dtype=np.int64)
        pos = self._home(keys)
        todo = np.arange(len(keys))
        while todo.size:
            free = self.slot_key[pos] == 0
            cand, at = todo[free], pos[free]
            self.slot_pos[at] = cand  # among keys that want one free slot, one wins
            won = self.slot_pos[at] == cand
            self.slot_key[at[won]] = keys[cand[won]]
            placed = np.zeros(todo.size, dtype=bool)
            placed[np.flatnonzero(free)[won]] = True
            todo, pos = todo[~placed], (pos[~placed] + 1) & (size - 1)

    def _home(self, keys: np.ndarray) -> np.ndarray:
        return ((keys * _MIX1) >> np.uint64(64 - self.bits)).astype(np.intp)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Position of each key, -1 where absent."""
        out = np.full(len(keys), -1, dtype=np.int64)
        pos = self._home(keys)
        todo = np.arange(len(keys))
        mask = (1 << self.bits) - 1
        while todo.size:
            here = self.slot_key[pos]
            hit = here == keys[todo]
            out[todo[hit]] = self.slot_pos[pos[hit]]
            going = ~hit & (here != 0)
            todo, pos = todo[going], (pos[going] + 1) & mask
        return out


def _count_documents(tokens: _Tokens, per_doc: np.ndarray, n: int) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """(keys, counts, number of documents) of every k-gram (k = 1..n) of ``tokens``, each document being
    ``per_doc[i]`` consecutive sentences: the table :class:`DocumentFrequency` holds."""
    lay = _Layout(tokens, per_doc, n)
    keys: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for o in _walk(tokens, lay, n):
        _, same_doc = _neighbours(o, lay)
        counts.append(np.add.reduceat(~same_doc, o.starts, dtype=np.int64))
        parent = np.maximum(o.parent - 1, 0)  # ids are ranks - 1; order 1 has the single root 0
        keys.append((parent.view(np.uint64) << np.uint64(32)) | o.last.view(np.uint64))
    while len(keys) < n:
        keys.append(np.zeros(0, np.uint64))
        counts.append(np.zeros(0, np.int64))
    return keys, counts, len(per_doc)


class DocumentFrequency:
    """Document frequencies of every n-gram (n = 1..max_n) in a fixed corpus: each document is one image's
    references, as pycocoevalcap counts them. ``ref_len`` is ``log(size)``.

    Stored per order as sorted keys ``(id of the (k-1)-gram prefix) << 32 | token id`` with their counts;
    the position of a key is the id of that k-gram. Build it with :meth:`from_refs` or
    :meth:`from_mapping`."""

    def __init__(self, vocab: dict[str, int], keys: list[np.ndarray], counts: list[np.ndarray], size: int,
                 id_space: int | None = None):
        self.vocab = vocab
        self.keys = keys
        self.counts = counts
        self.size = int(size)
        self.max_n = len(keys)
        #: built by :meth:`from_token_ids`: corpus ids are those token ids (< ``id_space``), so
        #: :meth:`CiderD.score_token_ids` scores token ids against it without any mapping
        self.id_space = id_space

    @property
    def ref_len(self) -> float:
        return float(np.log(float(self.size)))

    def _index(self, order: int) -> "_KeyIndex":
        """The hash index of ``keys[order]``, built on first use (a reward looks up every step)."""
        cache = self.__dict__.setdefault("_indexes", {})
        if order not in cache:
            cache[order] = _KeyIndex(self.keys[order])
        return cache[order]

    def __len__(self) -> int:
        return sum(len(k) for k in self.keys)

    @classmethod
    def from_refs(cls, refs: Mapping[Any, Sequence[str]] | Iterable[Sequence[str]], n: int = 4) -> "DocumentFrequency":
        """Count, for every n-gram, the documents (images) whose references contain it. ``refs`` is
        ``{image_id: [tokenised caption, ...]}`` or an iterable of caption lists."""
        docs = list(refs.values()) if isinstance(refs, Mapping) else list(refs)
        if not docs:
            raise DataError("cannot build document frequencies from an empty corpus")
        bad = next((d for d in docs if isinstance(d, str) or not d), None)
        if bad is not None:
            raise DataError(f"each document of the corpus must be a non-empty list of captions, got {bad!r}")
        per_doc = np.array([len(d) for d in docs], dtype=np.int64)
        sentences = [s for d in docs for s in d]
        tokens = _tokenize(sentences)
        words = tokens.words()
        keys, counts, size = _count_documents(tokens, per_doc, n)
        return cls({w: i for i, w in enumerate(words) if i}, keys, counts, size)

    @classmethod
    def from_token_ids(
        cls, ids: np.ndarray, lengths: np.ndarray, per_doc: np.ndarray, vocab_size: int,
        words: Sequence[str] | None = None, n: int = 4,
    ) -> "DocumentFrequency":
        """Document frequencies of sentences given as token ids (a training reward computed on a
        tokenizer's ids, no strings): ``ids`` all sentences concatenated (every id in 1..vocab_size-1; 0
        is reserved), ``lengths`` the ids per sentence, ``per_doc`` the sentences per document (image).
        The counts are those :meth:`from_refs` finds on the sentences written as words; ``words[i]`` (the
        tokenizer's word of id ``i``) lets the same table score strings too."""
        ids = np.asarray(ids)
        if ids.size and (int(ids.min()) < 1 or int(ids.max()) >= vocab_size):
            raise DataError(f"token ids must lie in 1..{vocab_size - 1} (0 is padding); got {int(ids.min())}..{int(ids.max())}")
        per_doc = np.asarray(per_doc, dtype=np.int64)
        if per_doc.size == 0 or (per_doc < 1).any():
            raise DataError("cannot build document frequencies: every document needs at least one sentence")
        tokens = _Tokens(ids.astype(_id_dtype(vocab_size)), np.asarray(lengths, dtype=np.int64), int(vocab_size), lambda: [])
        vocab = {w: i for i, w in enumerate(words) if i} if words is not None else {str(i): i for i in range(1, vocab_size)}
        keys, counts, size = _count_documents(tokens, per_doc, n)
        return cls(vocab, keys, counts, size, id_space=int(vocab_size))

    @classmethod
    def from_mapping(cls, df: Mapping[tuple[str, ...], float], size: int, n: int = 4) -> "DocumentFrequency":
        """From ``{("a", "man"): count, ...}`` (pycocoevalcap's ``document_frequency`` layout) and the
        number of documents it was counted over."""
        if size < 1:
            raise DataError(f"document frequency corpus size must be >= 1, got {size}")
        vocab: dict[str, int] = {}
        table: dict[tuple[str, ...], float] = {}
        for gram, count in df.items():
            if not isinstance(gram, tuple) or not 1 <= len(gram) <= n:
                raise DataError(f"document frequency key {gram!r}: expected a tuple of 1..{n} words")
            if count > size:
                raise DataError(
                    f"document frequency of {gram!r} is {count}, more than the corpus size {size}; pass the "
                    "number of documents it was counted over as corpus_size"
                )
            for j in range(1, len(gram)):
                table.setdefault(gram[:j], 0.0)
            table[gram] = float(count)
            for w in gram:
                vocab.setdefault(w, len(vocab) + 1)
        keys, counts = [], []
        ids: dict[tuple[str, ...], int] = {(): 0}
        for k in range(1, n + 1):
            rows = sorted((ids[g[:-1]], vocab[g[-1]], g) for g in table if len(g) == k)
            for i, (_, _, g) in enumerate(rows):
                ids[g] = i
            keys.append(np.array([(p << 32) | t for p, t, _ in rows], dtype=np.uint64))
            counts.append(np.array([table[g] for _, _, g in rows], dtype=np.float64))
        return cls(vocab, keys, counts, size)

    def lookup(self, o: _Order, token_map: np.ndarray, parent_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(document frequency, corpus id or -1) of each k-gram of ``o``; ``token_map`` maps call token ids
        to corpus ids (-1: unknown word) and ``parent_ids`` are the corpus ids of order k-1."""
        ntok = len(o.last)
        if o.k > self.max_n:
            return np.zeros(ntok), np.full(ntok, -1, np.int64)
        tok = token_map[o.last]
        prefix = np.zeros(ntok, np.int64) if parent_ids is None else parent_ids[o.parent - 1]
        ok = (tok >= 0) & (prefix >= 0)
        key = (prefix.view(np.uint64) << np.uint64(32)) | tok.view(np.uint64)
        table = self.keys[o.k - 1]
        if len(table) > _HASH_ABOVE:  # a training corpus: a hash probe beats a binary search
            at = self._index(o.k - 1).find(key)
            found = ok & (at >= 0)
            at = np.maximum(at, 0)
        else:
            at = np.minimum(np.searchsorted(table, key), max(len(table) - 1, 0))
            found = ok & (len(table) > 0)
            if len(table):
                found &= table[at] == key
        cid = np.where(found, at, -1)
        df = np.where(found, self.counts[o.k - 1][at] if len(table) else 0.0, 0.0)
        return df.astype(np.float64), cid


# ---------------------------------------------------------------------------------------------------------
# The scorer
# ---------------------------------------------------------------------------------------------------------
_ZOO_PACKAGE = Path(__file__).resolve().parents[1]  # the zoo package, not this subpackage


def _small_corpus_advice(caller: Any) -> str:
    """What to do about a small corpus, for whoever will read it. The zoo itself calls :class:`CiderD`
    directly only for the validation score of ``zoo train`` (``zoo.evaluation.captioning.validation_score``;
    ``zoo eval``/``zoo score`` go through ``zoo.evaluation.coco``, which says it once, as a note): that
    reader is on the command line and needs a flag. Anyone else called from their own code and gets the
    Python API's options."""
    try:
        internal = Path(caller.f_code.co_filename).resolve().is_relative_to(_ZOO_PACKAGE)
    except (AttributeError, OSError, ValueError):
        internal = False
    if internal:
        return (
            f"As a validation score it picks best.safetensors by noise: validate on at least {SMALL_CORPUS} "
            "images, with a larger validation split (`zoo train --val-split NAME`) or, if it was lowered, "
            "a larger --set train.val_images=N."
        )
    return (
        "Score at least a few hundred images, or fix the document frequencies to a larger corpus with "
        "CiderD.from_corpus(train_refs)."
    )



class CiderD:
    """CIDEr-D with pycocoevalcap's exact formula and interface: ``compute_score(gts, res)`` with
    ``{image_id: [tokenised reference, ...]}`` and ``{image_id: [tokenised candidate]}`` returns
    ``(mean, per_image)``, ``per_image`` in the order of ``gts``.

    ``df="corpus"`` takes document frequencies from the references being scored (COCOEvalCap's behaviour,
    ``ref_len = log(number of images)``); a :class:`DocumentFrequency` (see :meth:`from_corpus`) or a
    ``{ngram tuple: count}`` mapping with ``corpus_size`` fixes them to a training corpus instead, as a
    self-critical reward should (``ref_len = log(corpus size)``).

    pycocoevalcap always counts 1..4-grams and only works with ``n=4``; other ``n`` here are the natural
    generalisation."""

    name = "cider-d-fast"
    keys = ["CIDEr-D"]
    requires_java = False

    def __init__(
        self,
        n: int = 4,
        sigma: float = 6.0,
        df: str | Mapping[tuple[str, ...], float] | DocumentFrequency = "corpus",
        corpus_size: int | None = None,
    ) -> None:
        if n < 1:
            raise ValueError(f"CiderD: n must be >= 1, got {n}")
        self.n = int(n)
        self.sigma = float(sigma)
        if isinstance(df, str):
            if df != "corpus":
                raise ValueError(
                    f"CiderD: df={df!r}; use 'corpus' (the evaluated references), CiderD.from_corpus(refs), "
                    "or a mapping {ngram tuple: count} with corpus_size"
                )
            self.document_frequency: DocumentFrequency | None = None
        elif isinstance(df, DocumentFrequency):
            self.document_frequency = df
        elif isinstance(df, Mapping):
            if corpus_size is None:
                raise ValueError("CiderD: a document-frequency mapping needs corpus_size (number of documents)")
            self.document_frequency = DocumentFrequency.from_mapping(df, corpus_size, self.n)
        else:
            raise TypeError(f"CiderD: df must be 'corpus', a DocumentFrequency or a mapping, got {type(df).__name__}")

    @classmethod
    def from_corpus(
        cls, refs: Mapping[Any, Sequence[str]] | Iterable[Sequence[str]], n: int = 4, sigma: float = 6.0
    ) -> "CiderD":
        """A scorer whose document frequencies come from ``refs`` (e.g. the training references, each
        image one document), for a training reward."""
        return cls(n=n, sigma=sigma, df=DocumentFrequency.from_refs(refs, n))

    def method(self) -> str:
        return "CIDEr"

    def __repr__(self) -> str:
        src = "corpus" if self.document_frequency is None else f"fixed({self.document_frequency.size} docs)"
        return f"CiderD(n={self.n}, sigma={self.sigma}, df={src})"

    def compute_score(self, gts: Mapping[Any, Sequence[str]], res: Mapping[Any, Any]) -> tuple[float, np.ndarray]:
        image_ids, sentences, n_refs = _collect(gts, res)
        if self.document_frequency is None and len(image_ids) < SMALL_CORPUS:
            n = len(image_ids)
            warnings.warn(
                SmallCorpusWarning(
                    f"CIDEr-D on {n} image{'s' if n != 1 else ''}: document frequencies come from the "
                    f"references being scored (ref_len = log({n})), so a set this small scores 0 or oddly"
                    + (" (a single image always scores 0)" if n == 1 else "")
                    + ". "
                    + _small_corpus_advice(sys._getframe(1))
                ),
                stacklevel=2,
            )
        per_image = self._score(sentences, n_refs)
        return float(per_image.mean()), per_image

    # -- the computation ------------------------------------------------------------------------------
    def score_token_ids(self, ids: np.ndarray, lengths: np.ndarray, n_refs: np.ndarray) -> np.ndarray:
        """Per-document CIDEr-D of sentences given as token ids, against document frequencies built by
        :meth:`DocumentFrequency.from_token_ids` on the same ids (a self-critical reward: no strings).
        Document ``i`` is ``1 + n_refs[i]`` consecutive sentences of ``ids``/``lengths``: its candidate,
        then its references. Equal to :meth:`compute_score` on the same sentences written as words."""
        fixed = self.document_frequency
        if fixed is None or fixed.id_space is None:
            raise ValueError("score_token_ids needs document frequencies from DocumentFrequency.from_token_ids")
        ids = np.asarray(ids)
        if ids.size and (int(ids.min()) < 1 or int(ids.max()) >= fixed.id_space):
            raise DataError(f"token ids must lie in 1..{fixed.id_space - 1}; got {int(ids.min())}..{int(ids.max())}")
        tokens = _Tokens(ids.astype(_id_dtype(fixed.id_space)), np.asarray(lengths, dtype=np.int64), fixed.id_space, lambda: [])
        return self._score_tokens(tokens, np.asarray(n_refs, dtype=np.int64), np.arange(fixed.id_space, dtype=np.int64))

    def _score(self, sentences: list[str], n_refs: np.ndarray) -> np.ndarray:
        tokens = _tokenize(sentences)
        fixed = self.document_frequency
        token_map = None
        if fixed is not None and tokens.ids.size:
            token_map = np.array([fixed.vocab.get(w, -1) for w in tokens.words()], dtype=np.int64)
        return self._score_tokens(tokens, n_refs, token_map)

    def _score_tokens(self, tokens: _Tokens, n_refs: np.ndarray, token_map: np.ndarray | None) -> np.ndarray:
        """The scores of :meth:`_score`; ``token_map`` maps ``tokens``' ids to the fixed corpus' ids."""
        n, n_docs = self.n, len(n_refs)
        if tokens.ids.size == 0:
            return np.zeros(n_docs)
        lay = _Layout(tokens, n_refs + 1, n)
        fixed = self.document_frequency
        ref_len = math.log(float(n_docs)) if fixed is None else fixed.ref_len
        norm2 = np.zeros((n, lay.n_vsent))
        val = np.zeros((n, lay.n_vsent))
        cand_bits = np.int64(((1 << lay.lb) - 1) << lay.ob)
        parent_ids = None
        for o in _walk(tokens, lay, n):
            same_sent, same_doc = _neighbours(o, lay)
            cand = (o.v & cand_bits) == 0
            if fixed is None:
                ref = ~cand
                first_ref = ref.copy()
                first_ref[1:] &= ~(same_doc[1:] & ref[:-1])
                df = np.add.reduceat(first_ref, o.starts, dtype=np.int64)
            else:
                df, parent_ids = fixed.lookup(o, token_map, parent_ids)
            idf = ref_len - np.log(np.maximum(1.0, df))
            weight = np.concatenate(([0.0], idf * idf))[o.rank]  # idf^2 of every occurrence
            tf = _term_frequencies(same_sent)
            sent = o.v >> lay.ob
            # |w|^2 = sum over distinct grams of (tf * idf)^2 = sum over occurrences of tf * idf^2
            norm2[o.k - 1] = np.bincount(sent, weights=weight, minlength=lay.n_vsent)
            if tf is not None:  # the few repeated n-grams: add (tf - 1) * idf^2 more
                extra = weight[tf.index] * (tf.count - 1.0)
                norm2[o.k - 1] += np.bincount(sent[tf.index], weights=extra, minlength=lay.n_vsent)
            val[o.k - 1] = self._matches(o, same_doc, cand, weight, tf, sent, lay.n_vsent)
        norm = np.sqrt(norm2)
        cand_slot = (np.arange(lay.n_vsent) >> lay.lb) << lay.lb
        norm_c = norm[:, cand_slot]
        both = (norm_c != 0) & (norm != 0)
        sim = np.where(both, val / np.where(both, norm_c * norm, 1.0), val)
        bigrams = np.maximum(lay.vlen - 1, 0)
        delta = (bigrams[cand_slot] - bigrams).astype(np.float64)
        penalty = np.power(np.e, -(delta**2) / (2 * self.sigma**2))
        per_sentence = (sim * penalty).sum(axis=0).reshape(n_docs, 1 << lay.lb)
        return per_sentence[:, 1:].sum(axis=1) / (n * n_refs) * 10.0

    @staticmethod
    def _matches(o, same_doc, cand, weight, tf, sent, n_vsent) -> np.ndarray:
        """sum_g min(w_c, w_r) * w_r for every reference sentence r (w = tf * idf). Within an
        (n-gram, image) block the candidate's occurrences come first; the references follow."""
        m = o.v.size
        block = np.flatnonzero(~same_doc)
        which = np.flatnonzero(cand[block])  # blocks that start with the candidate
        if which.size == 0:
            return np.zeros(n_vsent)
        first = block[which]
        end = block[np.minimum(which + 1, block.size - 1)]
        if which[-1] == block.size - 1:
            end[-1] = m
        begin = first + 1
        if tf is not None:  # blocks where the candidate repeats the n-gram: its occurrences come first
            rep = np.flatnonzero(tf.repeated[first])
            tf_c = tf.get(first[rep])
            begin[rep] += tf_c.astype(np.int64) - 1
        count = end - begin  # the references' occurrences that follow (0 when none does)
        offset = np.cumsum(count) - count
        idx = np.repeat(begin - offset, count) + np.arange(int(count.sum()))
        contrib = weight[idx]
        if tf is not None and rep.size:
            # min(tf_c, tf_r) * tf_r * idf^2, shared out over the tf_r occurrences (min is 1 if tf_c = 1)
            at = np.repeat(offset[rep] - np.cumsum(count[rep]) + count[rep], count[rep]) + np.arange(int(count[rep].sum()))
            contrib[at] *= np.minimum(np.repeat(tf_c, count[rep]), tf.get(idx[at]))
        return np.bincount(sent[idx], weights=contrib, minlength=n_vsent)


def _collect(gts: Mapping[Any, Sequence[str]], res: Mapping[Any, Any]) -> tuple[list, list[str], np.ndarray]:
    """Image ids in ``gts`` order, the sentences (candidate first, then references, per image) and the
    number of references per image; bad input raises DataError naming the image."""
    if len(gts) != len(res) or gts.keys() != res.keys():
        missing = next((k for k in gts if k not in res), None)
        if missing is not None:
            raise DataError(f"image {missing!r} has references but no candidate caption; gts and res need the same ids")
        extra = next(k for k in res if k not in gts)
        raise DataError(f"image {extra!r} has a candidate caption but no references; gts and res need the same ids")
    if not gts:
        raise DataError("nothing to score: gts and res are empty")
    image_ids = list(gts)
    sentences: list[str] = []
    n_refs = np.empty(len(image_ids), dtype=np.int64)
    for i, key in enumerate(image_ids):
        cand, refs = res[key], gts[key]
        if not isinstance(cand, str):
            if not isinstance(cand, (list, tuple)) or len(cand) != 1:
                raise DataError(f"image {key!r}: expected exactly one candidate caption, got {cand!r}")
            cand = cand[0]
        if not isinstance(refs, (list, tuple)) or len(refs) == 0:
            raise DataError(f"image {key!r}: references must be a non-empty list of captions, got {refs!r}")
        sentences.append(cand)
        sentences.extend(refs)
        n_refs[i] = len(refs)
    return image_ids, sentences, n_refs
