"""Decoding constraints shared by beam search and sampling: tokens a caption may not take next.

``Constraints.apply(logp, history, eos_id)`` sets the log-probability of every forbidden next token to
-inf, for all rows at once (``history`` holds each row's tokens so far), so ``zoo.generation.beam_search``
and ``zoo.generation.sample`` use the very same rules. Allowed tokens keep the model's log-probability
(nothing is renormalised), so a constrained caption's score is still its log-probability under the model.

* ``min_len``: <eos> is forbidden until the caption has ``min_len`` tokens (words or pieces).
* ``no_repeat_ngram``: no n-gram of that many tokens occurs twice (3 blocks "a man on a man on ...").
* ``suppress_unk``: <unk> is never produced.
* ``bad_endings``: <eos> is forbidden right after a word of ``BAD_ENDING_WORDS`` ("a man riding a"),
  the known failure of CIDEr-optimised models. The words are resolved through the tokenizer, each to the
  token sequence it encodes to, so word and sentencepiece tokenizers alike are covered (a word the
  vocabulary lacks is skipped).

A row whose every token is forbidden (a tiny vocabulary with ``no_repeat_ngram=1``) may still end: its
<eos> gets its model log-probability back, so neither search is ever left without a candidate.
``banned_reference`` states the same rules in plain Python for one caption: the yardstick for ``apply``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, Sequence

import torch

from zoo.contracts.tokenizer import UNK_ID
from zoo.generation.checks import DecodingOptionError

#: words a caption should not end on (articles, prepositions, conjunctions, auxiliaries), after the list the
#: widely used self-critical captioning code blocks, with "and", "or", "by", "from", "into", "onto",
#: "its", "their" and "some" added
BAD_ENDING_WORDS: tuple[str, ...] = (
    "a", "an", "the", "of", "in", "on", "with", "to", "and", "or", "at", "for", "by", "from", "into", "onto",
    "near", "upon", "before", "after", "is", "are", "am", "its", "their", "some",
)


def ends_badly(caption: str) -> bool:
    """Whether ``caption``'s last word is one of ``BAD_ENDING_WORDS`` (lower-cased, punctuation ignored):
    the evaluation statistic that goes with the ``bad_endings`` constraint."""
    words = "".join(ch if ch.isalnum() or ch.isspace() else " " for ch in caption.lower()).split()
    return bool(words) and words[-1] in BAD_ENDING_WORDS


def check_constraint_options(min_len: int, no_repeat_ngram: int, max_len: int | None = None) -> None:
    """Refuse constraint settings before decoding; the message names the option and its flag."""
    for name, flag, value, what in (
        ("min_len", "--min-len", min_len, "tokens before <eos> is allowed; 0 = no minimum"),
        ("no_repeat_ngram", "--no-repeat-ngram", no_repeat_ngram, "0 = off, 3 = no repeated trigram"),
    ):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise DecodingOptionError(f"{name} ({flag}) must be an integer ≥ 0 ({what}), got {value!r}")
    if max_len is not None and min_len >= max_len:
        raise DecodingOptionError(
            f"min_len (--min-len) must be smaller than max_len (--max-len {max_len}), or no caption could "
            f"ever end with <eos>; got {min_len}"
        )


@dataclass(frozen=True)
class Constraints:
    """Token-level rules for both searches (see the module docstring). Build one for a tokenizer with
    :meth:`for_tokenizer`; ``bad_ending_sequences`` are token-id sequences after which <eos> is
    forbidden."""

    min_len: int = 0
    no_repeat_ngram: int = 0
    suppress_unk: bool = False
    bad_ending_sequences: tuple[tuple[int, ...], ...] = ()
    unk_id: int = UNK_ID
    _by_length: dict[int, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_constraint_options(self.min_len, self.no_repeat_ngram)
        groups: dict[int, list[tuple[int, ...]]] = {}
        for seq in self.bad_ending_sequences:
            if seq:
                groups.setdefault(len(seq), []).append(tuple(int(i) for i in seq))
        for length, seqs in groups.items():
            self._by_length[length] = torch.tensor(sorted(set(seqs)), dtype=torch.long)

    @classmethod
    def for_tokenizer(
        cls,
        tokenizer: Any,
        *,
        min_len: int = 0,
        no_repeat_ngram: int = 0,
        suppress_unk: bool = False,
        bad_endings: bool | Iterable[str] = False,
    ) -> "Constraints | None":
        """The constraints for ``tokenizer``'s ids, or None when none is set (the searches then skip the
        step). ``bad_endings``: True for ``BAD_ENDING_WORDS``, or the words themselves."""
        words: Sequence[str] = BAD_ENDING_WORDS if bad_endings is True else tuple(bad_endings or ())
        seqs = []
        for w in words:
            ids = tuple(tokenizer.encode(w))
            if ids and tokenizer.unk_id not in ids:  # a word the vocabulary lacks cannot be produced anyway
                seqs.append(ids)
        out = cls(min_len=min_len, no_repeat_ngram=no_repeat_ngram, suppress_unk=bool(suppress_unk),
                  bad_ending_sequences=tuple(seqs), unk_id=tokenizer.unk_id)
        return out if out.active else None

    @property
    def active(self) -> bool:
        return bool(self.min_len or self.no_repeat_ngram or self.suppress_unk or self._by_length)

    # -- batched: what the searches call ------------------------------------------------------------------
    def apply(self, logp: torch.Tensor, history: torch.Tensor, eos_id: int) -> torch.Tensor:
        """``logp`` (R, V) with the forbidden next tokens at -inf; ``history`` (R, t): each row's tokens so
        far (no <bos>). Returns a new tensor; ``logp`` is left alone."""
        out = logp.clone()
        R, t = history.shape
        V = out.shape[-1]
        neg = float("-inf")
        if self.suppress_unk and 0 <= self.unk_id < V and self.unk_id != eos_id:
            out[:, self.unk_id] = neg
        if t < self.min_len:
            out[:, eos_id] = neg
        for length, seqs in self._by_length.items():
            if t >= length:
                tail = history[:, t - length:]  # (R, L)
                hit = (tail.unsqueeze(1) == seqs.to(history.device).unsqueeze(0)).all(-1).any(-1)
                out[:, eos_id] = out[:, eos_id].masked_fill(hit, neg)
        n = self.no_repeat_ngram
        if n and t >= n:
            grams = history.unfold(1, n, 1)  # (R, t - n + 1, n): every n-gram so far
            prefix = history[:, t - n + 1:].unsqueeze(1)  # (R, 1, n - 1): what the next token would extend
            seen = (grams[:, :, :-1] == prefix).all(-1)  # the n-grams that start with that prefix
            banned = torch.zeros_like(out).scatter_add_(1, grams[:, :, -1], seen.to(out.dtype)) > 0
            out = out.masked_fill(banned, neg)
        stuck = torch.isneginf(out).all(-1)
        if bool(stuck.any()):
            out[stuck, eos_id] = logp[stuck, eos_id]
        return out

    # -- plain: the reference -----------------------------------------------------------------------------
    def banned_reference(self, history: Sequence[int], vocab_size: int, eos_id: int) -> set[int]:
        """The tokens ``apply`` forbids after ``history``, computed plainly for one caption (without the
        'stuck' rule, which ``apply_reference`` adds)."""
        h = [int(i) for i in history]
        t = len(h)
        banned: set[int] = set()
        if self.suppress_unk and 0 <= self.unk_id < vocab_size and self.unk_id != eos_id:
            banned.add(self.unk_id)
        if t < self.min_len:
            banned.add(eos_id)
        if any(tuple(h[t - len(seq):]) == tuple(seq) for seq in self.bad_ending_sequences if 0 < len(seq) <= t):
            banned.add(eos_id)
        n = self.no_repeat_ngram
        if n:
            prefix = h[t - n + 1:] if n > 1 else []
            for j in range(t - n + 1):
                if h[j : j + n - 1] == prefix:
                    banned.add(h[j + n - 1])
        return banned

    def apply_reference(self, logp: torch.Tensor, history: Sequence[int], eos_id: int) -> torch.Tensor:
        """``apply`` for one row (``logp`` (V,)), built from :meth:`banned_reference` token by token."""
        V = logp.shape[-1]
        out = logp.clone()
        for w in self.banned_reference(history, V, eos_id):
            out[w] = float("-inf")
        if all(v == float("-inf") for v in out.tolist()):
            out[eos_id] = logp[eos_id]
        return out


class LogitConstraints(Protocol):
    """What both searches ask of a ``constraints`` object (a :class:`Constraints`, or a plugin's own): the
    log-probabilities of the next token with forbidden tokens set to -inf, given each row's history."""

    def apply(self, logp: torch.Tensor, history: torch.Tensor, eos_id: int) -> torch.Tensor: ...


def check_constraints(constraints: Any, max_len: int) -> None:
    """What both searches check of the ``constraints`` they are given: a minimum length the maximum length leaves no room for is refused (``--min-len``)."""
    min_len = getattr(constraints, "min_len", 0)
    if min_len:
        check_constraint_options(min_len, getattr(constraints, "no_repeat_ngram", 0), max_len)
