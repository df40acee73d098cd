"""The classic word vocabulary of the COCO captioning literature (Karpathy's preprocessing).

Captions are lower-cased, put in Unicode NFC form and cut into runs of letters and digits of any script;
the combining marks that follow a letter (Devanagari vowel signs and viramas, the accent of a decomposed
"café", Arabic harakat) belong to its word. An apostrophe inside a word is kept ("it's", "child's") and
every other punctuation mark is a separator ("twin-hulled" → "twin", "hulled"). That reproduces the
``tokens`` of Karpathy's ``dataset_coco.json`` exactly. Text without combining marks (all of ASCII, and
precomposed Latin such as "café" or "naïve") is split exactly as before marks were handled, so
vocabularies trained on it keep their words and ids (a checkpoint's word list is used as stored).

Words seen at most ``min_count`` times in the training captions become ``<unk>``; with the literature's
``min_count=5`` the Karpathy train split gives about 9,500 words.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import unicodedata
from collections import Counter
from typing import Any, Iterable, Sequence

import zoo
from zoo.errors import CheckpointError, DataError, ZooError
from zoo.contracts.tokenizer import SPECIAL_TOKENS, UNK_ID

FORMAT = "zoo-word-tokenizer"
VERSION = 1


def split_words(text: str) -> list[str]:
    """The words of ``text`` as Karpathy's preprocessing sees them: lower-case, punctuation stripped,
    NFC form, combining marks kept inside the word they belong to."""
    return _word_pattern().findall(_normalise(text))


def _normalise(text: str) -> str:
    """Lower case, then NFC (lower-casing may decompose, e.g. "İ" → "i" + U+0307)."""
    return unicodedata.normalize("NFC", text.lower())


@functools.lru_cache(maxsize=None)
def _word_pattern() -> re.Pattern[str]:
    """A word: letters/digits of any script (``[^\\W_]``, no underscore) with the combining marks (Unicode
    category M) that follow them, optionally joined by inner apostrophes. Python's ``re`` has no
    ``\\p{M}``, so the marks' ranges are read from ``unicodedata`` once, on first use (about 0.1 s).

    Built as "a run of letters, then (marks, letters)*" so that plain text runs through the fast
    ``[^\\W_]+`` loop and only a word's end is checked against the marks (close to the old speed)."""
    bmp = _ranges(lambda c: unicodedata.category(c)[0] == "M", 0, 0x10000)
    astral = _ranges(lambda c: unicodedata.category(c)[0] == "M", 0x10000, sys.maxunicode + 1)
    # the astral ranges are only tried behind a one-range guard: a separator costs one check, not ~100
    mark = rf"(?:[{_char_class(bmp)}]|(?=[\U00010000-\U0010ffff])[{_char_class(astral)}])"
    word = rf"[^\W_]+(?:{mark}+[^\W_]*)*"
    return re.compile(rf"{word}(?:'{word})*")


def _ranges(pred: Any, lo: int, hi: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    start = -1
    for cp in range(lo, hi):
        if pred(chr(cp)):
            if start < 0:
                start = cp
        elif start >= 0:
            out.append((start, cp - 1))
            start = -1
    if start >= 0:
        out.append((start, hi - 1))
    return out


def _char_class(ranges: list[tuple[int, int]]) -> str:
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges
    )


class WordTokenizer(zoo.Tokenizer):
    """Whole words, lower-cased, punctuation stripped; words seen ≤ ``min_count`` times → ``<unk>``.

    Ids 0-3 are ``<pad> <bos> <eos> <unk>``; words follow by frequency (descending), ties
    alphabetically, so the same captions always give the same ids. ``max_vocab`` caps the vocabulary
    size (the four special tokens included) by keeping the most frequent words.
    """

    name = "word"

    def __init__(self, words: Sequence[str], *, min_count: int = 5, max_vocab: int | None = None) -> None:
        _check_options(min_count, max_vocab)
        self._itos: list[str] = [*SPECIAL_TOKENS, *words]
        self._stoi: dict[str, int] = {w: i for i, w in enumerate(self._itos)}
        if len(self._stoi) != len(self._itos):
            raise ZooError("word tokenizer: the word list has duplicates or special tokens in it")
        self._min_count = min_count
        self._max_vocab = max_vocab

    # -- training -------------------------------------------------------------------------------------
    @classmethod
    def train(cls, captions: Iterable[str], **options: Any) -> "WordTokenizer":
        """Count words over ``captions`` and keep those seen more than ``min_count`` times.

        Options: ``min_count`` (int, default 5: a word must be seen at least 6 times to get its own id),
        ``max_vocab`` (int or None: at most this many ids, specials included)."""
        unknown = set(options) - {"min_count", "max_vocab"}
        if unknown:
            raise ZooError(
                f"word tokenizer: unknown option(s) {', '.join(sorted(unknown))}; "
                "its options are min_count (default 5) and max_vocab (default None)"
            )
        min_count = options.get("min_count", 5)
        max_vocab = options.get("max_vocab")
        _check_options(min_count, max_vocab)
        captions = [c for c in captions if c and c.strip()]
        if not captions:
            raise DataError(
                "cannot train the word tokenizer on no captions: the caption list is empty or every "
                "caption is blank. Pass the training captions (strings)."
            )
        # one findall over the joined text is several times faster than one per caption
        counts = Counter(split_words("\n".join(captions)))
        kept = sorted((w for w, n in counts.items() if n > min_count), key=lambda w: (-counts[w], w))
        if max_vocab is not None:
            kept = kept[: max_vocab - len(SPECIAL_TOKENS)]
        if not kept:
            raise DataError(
                f"word tokenizer: no word occurs more than min_count={min_count} times in the "
                f"{len(captions)} captions, so the vocabulary would be empty. Lower min_count "
                "(e.g. min_count=0) or train on more captions."
            )
        return cls(kept, min_count=min_count, max_vocab=max_vocab)

    # -- the Tokenizer contract ---------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        get = self._stoi.get
        return [get(w, UNK_ID) for w in split_words(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self._itos[i] for i in self.content_ids(ids))

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    @property
    def words(self) -> list[str]:
        """The vocabulary in id order, special tokens included."""
        return list(self._itos)

    def options(self) -> dict:
        return {"min_count": self._min_count, "max_vocab": self._max_vocab}

    # -- serialisation ---------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """UTF-8 JSON: format tag, version, options and the word list (specials excluded)."""
        payload = {"format": FORMAT, "version": VERSION, "options": self.options(), "words": self._itos[4:]}
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> "WordTokenizer":
        try:
            payload = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, TypeError):
            payload = None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise CheckpointError(
                "these bytes are not a word tokenizer payload (expected the JSON written by "
                "WordTokenizer.to_bytes). The checkpoint may be corrupt, or its tokenizer is another "
                "kind: check the tokenizer name recorded with it."
            )
        version = payload.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise CheckpointError(
                f"word tokenizer payload has format version {version!r}; this zoo reads up to "
                f"{VERSION}. Upgrade caption-zoo to load it."
            )
        words = payload.get("words")
        opts = payload.get("options") or {}
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise CheckpointError("word tokenizer payload has no valid 'words' list; the checkpoint is corrupt")
        if not isinstance(opts, dict):
            raise CheckpointError("word tokenizer payload has no valid 'options' object; the checkpoint is corrupt")
        unknown = sorted(set(opts) - {"min_count", "max_vocab"})
        if unknown:
            raise CheckpointError(
                f"word tokenizer payload has option(s) {', '.join(map(repr, unknown))} that this caption-zoo "
                f"does not know (it knows 'min_count', 'max_vocab'): the checkpoint was written by a newer "
                f"caption-zoo, or edited. Upgrade caption-zoo (pip install -U caption-zoo) to load it."
            )
        try:
            return cls(words, min_count=opts.get("min_count", 5), max_vocab=opts.get("max_vocab"))
        except ZooError as exc:  # duplicate words, an option value _check_options refuses
            raise CheckpointError(f"word tokenizer payload does not load: {exc}; the checkpoint is corrupt") from exc

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size}, min_count={self._min_count}, max_vocab={self._max_vocab})"


def _check_options(min_count: object, max_vocab: object) -> None:
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 0:
        raise ZooError(f"word tokenizer: min_count must be an integer ≥ 0, got {min_count!r}")
    if max_vocab is not None and (
        isinstance(max_vocab, bool) or not isinstance(max_vocab, int) or max_vocab <= len(SPECIAL_TOKENS)
    ):
        raise ZooError(
            f"word tokenizer: max_vocab must be None or an integer > {len(SPECIAL_TOKENS)} "
            f"(it counts the {len(SPECIAL_TOKENS)} special tokens), got {max_vocab!r}"
        )


@zoo.hookimpl
def zoo_register(registry: Any) -> None:
    registry.add_tokenizer("word", WordTokenizer)
