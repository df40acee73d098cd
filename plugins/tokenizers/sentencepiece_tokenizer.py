"""Subword tokenizers (BPE or unigram) trained in memory with Google's sentencepiece.

Why subwords: no caption word is ever ``<unk>`` (every character of the training captions is kept with
``character_coverage=1.0``), and the vocabulary size is chosen rather than fallen out of a count threshold.

Training is made reproducible: one thread (sentencepiece's unigram trainer gives different pieces with
more threads), every training sentence used (no sampling, so no random seed matters), and the log
silenced. The checkpoint carries the whole sentencepiece model, so nothing but the bytes is needed to
rebuild the tokenizer.

A ``vocab_size`` too large for the captions is an error (we keep sentencepiece's ``hard_vocab_limit``)
that says which size would fit: a silently smaller vocabulary would disagree with the recorded options.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any, Iterable, Sequence

import sentencepiece as spm

import zoo
from zoo.errors import CheckpointError, DataError, ZooError
from zoo.contracts.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID

MAGIC = b"zoo-sentencepiece\n"
VERSION = 1
MODEL_TYPES = ("bpe", "unigram")
DEFAULTS: dict[str, Any] = {"model_type": "bpe", "vocab_size": 4000, "lowercase": True, "character_coverage": 1.0}

_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")


class SentencePieceTokenizer(zoo.Tokenizer):
    """Subword pieces learnt by sentencepiece: ``model_type`` "bpe" or "unigram", ``vocab_size`` pieces
    (the four special tokens included), captions lower-cased first when ``lowercase``.

    Build one with ``SentencePieceTokenizer.train(captions, vocab_size=...)``; the constructor wraps an
    already trained sentencepiece model (its serialized proto)."""

    name = "sentencepiece"

    def __init__(
        self,
        model_proto: bytes,
        *,
        model_type: str = "bpe",
        vocab_size: int = 4000,
        lowercase: bool = True,
        character_coverage: float = 1.0,
    ) -> None:
        self._options = _check_options(
            {
                "model_type": model_type,
                "vocab_size": vocab_size,
                "lowercase": lowercase,
                "character_coverage": character_coverage,
            }
        )
        self._proto = bytes(model_proto)
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(f"sentencepiece tokenizer: the model bytes do not load ({exc}); the checkpoint is corrupt") from exc
        ids = (self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id(), self._sp.unk_id())
        if ids != (PAD_ID, BOS_ID, EOS_ID, UNK_ID):
            raise CheckpointError(
                f"sentencepiece tokenizer: the model has pad/bos/eos/unk ids {ids}, but the zoo needs "
                f"{(PAD_ID, BOS_ID, EOS_ID, UNK_ID)}. Train it with SentencePieceTokenizer.train."
            )

    # -- training -------------------------------------------------------------------------------------
    @classmethod
    def train(cls, captions: Iterable[str], **options: Any) -> "SentencePieceTokenizer":
        """Learn ``vocab_size`` pieces from ``captions`` (all of them, in memory, one thread).

        Options: ``model_type`` ("bpe" | "unigram", default "bpe"), ``vocab_size`` (default 4000),
        ``lowercase`` (default True), ``character_coverage`` (default 1.0: keep every character)."""
        unknown = set(options) - set(DEFAULTS)
        if unknown:
            raise ZooError(
                f"sentencepiece tokenizer: unknown option(s) {', '.join(sorted(unknown))}; its options "
                f"are {', '.join(f'{k} (default {v!r})' for k, v in DEFAULTS.items())}"
            )
        opts = _check_options({**DEFAULTS, **options})
        sentences = [_prepare(c, opts["lowercase"]) for c in captions if c and c.strip()]
        if not sentences:
            raise DataError(
                "cannot train the sentencepiece tokenizer on no captions: the caption list is empty or "
                "every caption is blank. Pass the training captions (strings)."
            )
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences),
                model_writer=model,
                model_type=opts["model_type"],
                vocab_size=opts["vocab_size"],
                character_coverage=opts["character_coverage"],
                pad_id=PAD_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                unk_id=UNK_ID,
                pad_piece=SPECIAL_TOKENS[PAD_ID],
                bos_piece=SPECIAL_TOKENS[BOS_ID],
                eos_piece=SPECIAL_TOKENS[EOS_ID],
                unk_piece=SPECIAL_TOKENS[UNK_ID],
                unk_surface=SPECIAL_TOKENS[UNK_ID],  # decode an unknown as "<unk>", like the word tokenizer
                num_threads=1,  # the unigram trainer's result depends on the thread count
                input_sentence_size=0,  # use every sentence: no random sampling
                shuffle_input_sentence=False,
                hard_vocab_limit=True,
                minloglevel=2,
            )
        except RuntimeError as exc:
            raise _training_error(exc, opts, len(sentences)) from exc
        return cls(model.getvalue(), **opts)

    # -- the Tokenizer contract ---------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self._sp.encode(_prepare(text, self._options["lowercase"]), out_type=int)

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode(self.content_ids(ids))

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def pieces(self, text: str) -> list[str]:
        """The subword pieces of ``text`` (for looking at what the model learnt)."""
        return self._sp.encode(_prepare(text, self._options["lowercase"]), out_type=str)

    def options(self) -> dict:
        return dict(self._options)

    # -- serialisation ---------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """``MAGIC``, one line of JSON (version, options), then sentencepiece's serialized model proto."""
        header = json.dumps({"version": VERSION, "options": self._options}, separators=(",", ":"))
        return MAGIC + header.encode("utf-8") + b"\n" + self._proto

    @classmethod
    def from_bytes(cls, data: bytes) -> "SentencePieceTokenizer":
        data = bytes(data)
        header_end = data.find(b"\n", len(MAGIC))
        if not data.startswith(MAGIC) or header_end < 0:
            raise CheckpointError(
                "these bytes are not a sentencepiece tokenizer payload (expected the bytes written by "
                "SentencePieceTokenizer.to_bytes). The checkpoint may be corrupt, or its tokenizer is "
                "another kind: check the tokenizer name recorded with it."
            )
        try:
            header = json.loads(data[len(MAGIC) : header_end].decode("utf-8"))
            version, opts = header["version"], header["options"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"sentencepiece tokenizer payload has a corrupt header ({exc})") from exc
        if not isinstance(version, int) or version > VERSION:
            raise CheckpointError(
                f"sentencepiece tokenizer payload has format version {version!r}; this zoo reads up to "
                f"{VERSION}. Upgrade caption-zoo to load it."
            )
        if not isinstance(opts, dict):
            raise CheckpointError(
                f"sentencepiece tokenizer payload has a corrupt header: 'options' is a {type(opts).__name__}, "
                f"not an object; the checkpoint is corrupt"
            )
        unknown = sorted(set(opts) - set(DEFAULTS))
        if unknown:
            raise CheckpointError(
                f"sentencepiece tokenizer payload has option(s) {', '.join(map(repr, unknown))} that this "
                f"caption-zoo does not know (it knows {', '.join(DEFAULTS)}): the checkpoint was written by a "
                f"newer caption-zoo, or edited. Upgrade caption-zoo (pip install -U caption-zoo) to load it."
            )
        try:
            return cls(data[header_end + 1 :], **opts)
        except CheckpointError:
            raise
        except ZooError as exc:  # an option value _check_options refuses
            raise CheckpointError(f"sentencepiece tokenizer payload has a bad option value: {exc}") from exc

    def __reduce__(self) -> tuple:
        # the sentencepiece processor is rebuilt from our bytes (e.g. for DataLoader worker processes)
        return (type(self).from_bytes, (self.to_bytes(),))

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options.items())
        return f"SentencePieceTokenizer({opts})"


def _prepare(text: str, lowercase: bool) -> str:
    """One line of text: sentencepiece reads sentences line by line, and some captions hold newlines."""
    text = " ".join(text.split())
    return text.lower() if lowercase else text


def _check_options(opts: dict[str, Any]) -> dict[str, Any]:
    if opts["model_type"] not in MODEL_TYPES:
        raise ZooError(
            f"sentencepiece tokenizer: model_type must be one of {', '.join(MODEL_TYPES)}, got {opts['model_type']!r}"
        )
    vs = opts["vocab_size"]
    if isinstance(vs, bool) or not isinstance(vs, int) or vs <= len(SPECIAL_TOKENS):
        raise ZooError(
            f"sentencepiece tokenizer: vocab_size must be an integer > {len(SPECIAL_TOKENS)} (it counts the "
            f"{len(SPECIAL_TOKENS)} special tokens), got {vs!r}"
        )
    cc = opts["character_coverage"]
    if isinstance(cc, bool) or not isinstance(cc, (int, float)) or not 0 < cc <= 1:
        raise ZooError(f"sentencepiece tokenizer: character_coverage must be in (0, 1], got {cc!r}")
    if not isinstance(opts["lowercase"], bool):
        raise ZooError(f"sentencepiece tokenizer: lowercase must be True or False, got {opts['lowercase']!r}")
    return {**opts, "character_coverage": float(cc)}


def _training_error(exc: RuntimeError, opts: dict[str, Any], n_captions: int) -> ZooError:
    """sentencepiece's own messages are internal assertions; say what to change instead."""
    m = _TOO_HIGH.search(str(exc))
    if m:
        return ZooError(
            f"sentencepiece tokenizer: vocab_size={opts['vocab_size']} is too large for these "
            f"{n_captions} captions with model_type={opts['model_type']!r}: they yield at most {m.group(2)} "
            f"pieces. Set vocab_size <= {m.group(2)}, or train on more captions."
        )
    return ZooError(f"sentencepiece tokenizer: training failed with options {opts}: {exc}")


@zoo.hookimpl
def zoo_register(registry: Any) -> None:
    registry.add_tokenizer("sentencepiece", SentencePieceTokenizer)
