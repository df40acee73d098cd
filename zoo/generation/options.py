"""Decoding settings as one value: what ``zoo eval``, ``zoo caption``, ``zoo compare`` and the Python API
take, check before decoding, pass to ``CaptionModel.generate`` and record with the scores.

``DecodingOptions`` holds beam search (``beam_size``, ``length_penalty``), sampling (``sample`` with
``temperature``, ``top_k``, ``top_p``, ``n`` captions per image and the sampling ``seed``), the
constraints of ``zoo.generation.constraints`` (``min_len``, ``no_repeat_ngram``, ``suppress_unk``, ``bad_endings``)
and ``max_len``. ``recorded()`` is what goes into metrics files, the results database's ``decoding``
column and the leaderboard: beam search's three settings always (so rows recorded before these options
existed compare equal to new rows with the same settings), every sampling setting when sampling (beam
size then does not apply and is left out), and a constraint only when it is on. ``tag()`` is the part
of an evaluation's file names that tells its settings apart.

With ``n > 1`` (sampling only) an evaluation scores one caption per image: the most probable of the
``n`` (log-probability / length ** length_penalty, as beam search ranks), and writes all ``n``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

from zoo.generation.checks import (
    DecodingOptionError,
    check_decoding_options,
    check_sampling_options,
)
from zoo.generation.constraints import Constraints, check_constraint_options

#: the defaults every recorded setting is compared with
DEFAULTS: dict[str, Any] = {
    "beam_size": 3, "max_len": 20, "length_penalty": 1.0,
    "sample": False, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "n": 1, "seed": 0,
    "min_len": 0, "no_repeat_ngram": 0, "suppress_unk": False, "bad_endings": False,
}
_SAMPLING = ("temperature", "top_k", "top_p", "n", "seed")
_CONSTRAINTS = ("min_len", "no_repeat_ngram", "suppress_unk", "bad_endings")
#: option → its command-line flag (for messages)
FLAGS = {
    "beam_size": "--beam", "max_len": "--max-len", "length_penalty": "--length-penalty", "sample": "--sample",
    "temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p", "n": "-n/--num",
    "seed": "--sample-seed", "min_len": "--min-len", "no_repeat_ngram": "--no-repeat-ngram",
    "suppress_unk": "--suppress-unk", "bad_endings": "--bad-endings",
}


@dataclass(frozen=True)
class DecodingOptions:
    """Every decoding setting (see the module docstring); ``check()`` refuses bad values by flag."""

    beam_size: int = 3
    max_len: int = 20
    length_penalty: float = 1.0
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    min_len: int = 0
    no_repeat_ngram: int = 0
    suppress_unk: bool = False
    bad_endings: bool = False

    def check(self) -> "DecodingOptions":
        """Refuse settings no search can use, before any image is decoded: a ``DecodingOptionError``
        naming the option and its flag. Returns ``self``."""
        check_decoding_options(self.beam_size, self.max_len, self.length_penalty)
        for name in ("sample", "suppress_unk", "bad_endings"):
            if not isinstance(getattr(self, name), bool):
                raise DecodingOptionError(f"{name} ({FLAGS[name]}) must be True or False, got {getattr(self, name)!r}")
        check_sampling_options(self.n, self.temperature, self.top_k, self.top_p)
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise DecodingOptionError(f"seed (--sample-seed) must be an integer, got {self.seed!r}")
        if not self.sample:
            for name in _SAMPLING:
                if getattr(self, name) != DEFAULTS[name]:
                    raise DecodingOptionError(
                        f"{name} ({FLAGS[name]}) applies to sampling only: add --sample (sample=True), or "
                        f"leave it out for beam search (got {getattr(self, name)!r})"
                    )
        check_constraint_options(self.min_len, self.no_repeat_ngram, self.max_len)
        return self

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "DecodingOptions":
        """Options from keyword values (``generate``'s, or a recorded ``decoding`` dict); an unknown name is
        refused with the closest known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise DecodingOptionError(
                f"unknown decoding option {unknown[0]!r}{hint} Known options: {', '.join(sorted(known))}"
            )
        return cls(**dict(values))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DecodingOptions":
        """The options of a command that called :func:`add_decoding_arguments`; ``--beam`` with
        ``--sample`` is refused (beam search and sampling exclude each other)."""
        if args.sample and args.beam is not None:
            raise DecodingOptionError("--beam and --sample exclude each other: sampling draws each caption, "
                                      "beam search searches for it; give one of them")
        return cls(
            beam_size=DEFAULTS["beam_size"] if args.beam is None else args.beam,
            max_len=args.max_len, length_penalty=args.length_penalty, sample=args.sample,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, n=args.num, seed=args.sample_seed,
            min_len=args.min_len, no_repeat_ngram=args.no_repeat_ngram, suppress_unk=args.suppress_unk,
            bad_endings=args.bad_endings,
        ).check()

    # -- what is recorded ------------------------------------------------------------------------------
    def recorded(self) -> dict[str, Any]:
        """The settings recorded with the scores (see the module docstring)."""
        if self.sample:
            out: dict[str, Any] = {"sample": True, "max_len": self.max_len}
            out.update({k: getattr(self, k) for k in _SAMPLING})
            if self.n > 1:  # it ranks the n samples
                out["length_penalty"] = self.length_penalty
        else:
            out = {"beam_size": self.beam_size, "max_len": self.max_len, "length_penalty": self.length_penalty}
        out.update({k: getattr(self, k) for k in _CONSTRAINTS if getattr(self, k) != DEFAULTS[k]})
        return out

    @classmethod
    def from_recorded(cls, decoding: Mapping[str, Any]) -> "DecodingOptions":
        """The inverse of :meth:`recorded` (a setting not recorded had its default)."""
        return cls.from_mapping(decoding)

    def tag(self) -> str:
        """The file-name part for these settings: ``beam3`` or ``sample``, plus every setting that differs
        from its default (``_len16``, ``_lp0``, ``_t0.7``, ``_k5``, ``_p0.9``, ``_n5``, ``_seed1``,
        ``_min5``, ``_norep3``, ``_nounk``, ``_nobad``)."""
        tag = "sample" if self.sample else f"beam{self.beam_size}"
        parts = [("max_len", "len"), ("length_penalty", "lp")]
        if self.sample:
            parts = [("temperature", "t"), ("top_k", "k"), ("top_p", "p"), ("n", "n"), ("seed", "seed"),
                     ("max_len", "len")] + ([("length_penalty", "lp")] if self.n > 1 else [])
        parts += [("min_len", "min"), ("no_repeat_ngram", "norep")]
        for name, short in parts:
            value = getattr(self, name)
            if value != DEFAULTS[name]:
                tag += f"_{short}{_num(value)}"
        if self.suppress_unk:
            tag += "_nounk"
        if self.bad_endings:
            tag += "_nobad"
        return tag

    def describe(self) -> str:
        """One line for printed summaries, e.g. ``beam 3, max_len 20`` or ``sampling (T=0.7, top-k 5), n 5``."""
        if self.sample:
            bits = [f"T={self.temperature:g}"]
            if self.top_k:
                bits.append(f"top-k {self.top_k}")
            if self.top_p < 1:
                bits.append(f"top-p {self.top_p:g}")
            text = f"sampling ({', '.join(bits)}, seed {self.seed}), n {self.n}, max_len {self.max_len}"
        else:
            text = f"beam {self.beam_size}, max_len {self.max_len}"
        extra = [f"{k}={getattr(self, k)}" for k in _CONSTRAINTS if getattr(self, k) != DEFAULTS[k]]
        return text + (f", {', '.join(extra)}" if extra else "")

    # -- what generate takes ---------------------------------------------------------------------------
    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``CaptionModel.generate`` (the seed becomes a generator there)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "seed"}

    def constraints(self, tokenizer: Any) -> Any:
        """The ``zoo.generation.constraints.Constraints`` for ``tokenizer``'s ids, or None when none is set."""
        return Constraints.for_tokenizer(
            tokenizer, min_len=self.min_len, no_repeat_ngram=self.no_repeat_ngram,
            suppress_unk=self.suppress_unk, bad_endings=self.bad_endings,
        )


def _num(v: Any) -> str:
    """A number for a file name, exact and short: 1.0 → '1', 0.5 → '0.5', -0.5 → 'm0.5'."""
    text = repr(float(v)) if isinstance(v, float) else str(v)
    text = text.removesuffix(".0")
    return text.replace("-", "m").replace("+", "")


def add_decoding_arguments(parser: argparse.ArgumentParser, beam_help: str = "beam size (1 = greedy; default 3)") -> None:
    """The decoding flags, the same on ``zoo eval``, ``zoo caption`` and ``zoo compare``."""
    g = parser.add_argument_group("decoding")
    g.add_argument("--beam", type=int, default=None, help=beam_help)
    g.add_argument("--max-len", type=int, default=DEFAULTS["max_len"], help="tokens per caption at most (default 20)")
    g.add_argument("--length-penalty", type=float, default=DEFAULTS["length_penalty"],
                   help="rank by log-probability / length ** P (0 = raw log-probability; default 1)")
    g.add_argument("--sample", action="store_true",
                   help="sample captions (multinomial) instead of beam search; see --temperature, --top-k, --top-p, -n")
    g.add_argument("--temperature", type=float, default=DEFAULTS["temperature"],
                   help="sampling temperature > 0 (1 = the model's distribution)")
    g.add_argument("--top-k", type=int, default=DEFAULTS["top_k"], help="sample among the k most probable tokens (0 = all)")
    g.add_argument("--top-p", type=float, default=DEFAULTS["top_p"],
                   help="nucleus sampling: among the most probable tokens holding this much probability (1 = all)")
    g.add_argument("-n", "--num", type=int, default=DEFAULTS["n"],
                   help="captions sampled per image (with --sample; evaluation scores the most probable one)")
    g.add_argument("--sample-seed", type=int, default=DEFAULTS["seed"], help="seed of the sampling draws (default 0)")
    g.add_argument("--min-len", type=int, default=DEFAULTS["min_len"], help="no <eos> before this many tokens")
    g.add_argument("--no-repeat-ngram", type=int, default=DEFAULTS["no_repeat_ngram"], metavar="N",
                   help="never repeat an N-gram within a caption (3 is usual; 0 = off)")
    g.add_argument("--suppress-unk", action="store_true", help="never produce <unk>")
    g.add_argument("--bad-endings", action="store_true",
                   help="never end a caption on a, an, the, of, in, on, with, to, and, ... (zoo.generation.constraints.BAD_ENDING_WORDS)")
