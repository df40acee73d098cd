"""The classic word vocabulary of the COCO captioning literature (Karpathy's preprocessing).

Captions are lower-cased and cut into runs of letters and digits; an apostrophe inside a word is kept
("it's", "child's") and every other punctuation mark is a separator ("twin-hulled" → "twin", "hulled").
That reproduces the ``tokens`` of Karpathy's ``dataset_coco.json`` exactly. Words seen at most
``min_count`` times in the training captions become ``<unk>``; with the literature's ``min_count=5`` the
Karpathy train split gives about 9,500 words.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Iterable, Sequence

import zoo
from zoo.errors import CheckpointError, DataError, ZooError
from zoo.tokenizer import SPECIAL_TOKENS, UNK_ID

FORMAT = "zoo-word-tokenizer"
VERSION = 1

# letters/digits (any script, no underscore), optionally joined by inner apostrophes
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def split_words(text: str) -> list[str]:
    """The words of ``text`` as Karpathy's preprocessing sees them: lower-case, punctuation stripped."""
    return _WORD.findall(text.lower())


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
        counts = Counter(_WORD.findall("\n".join(captions).lower()))
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
        return cls(words, min_count=opts.get("min_count", 5), max_vocab=opts.get("max_vocab"))

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
