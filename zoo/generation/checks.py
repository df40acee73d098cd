"""Decoding settings refused before any image is decoded: beam size, maximum length, length penalty,
sampling settings, and attention asked of a decoder that has none. Messages name the option and its
command-line flag."""

from __future__ import annotations

import math
import numbers

from zoo.contracts.decoder import Decoder
from zoo.errors import ZooError


class DecodingOptionError(ZooError, ValueError):
    """A bad decoding setting (beam size, maximum length, length penalty); the message names the option,
    its command-line flag and the allowed range. A ValueError too, for callers that catch that."""


def check_decoding_options(beam_size: int, max_len: int, length_penalty: float = 1.0) -> None:
    """Refuse decoding settings beam search cannot use, before any image is decoded."""
    if isinstance(beam_size, bool) or not isinstance(beam_size, numbers.Integral) or beam_size < 1:
        raise DecodingOptionError(
            f"beam_size (--beam) must be an integer ≥ 1 (1 = greedy; 3-5 is usual), got {beam_size!r}"
        )
    if isinstance(max_len, bool) or not isinstance(max_len, numbers.Integral) or max_len < 1:
        raise DecodingOptionError(
            f"max_len (--max-len) must be an integer ≥ 1 (tokens per caption; 20 is usual), got {max_len!r}"
        )
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, numbers.Real) or not math.isfinite(length_penalty):
        raise DecodingOptionError(
            f"length_penalty (--length-penalty) must be a finite number (0 = raw log-probability, 1 = "
            f"per-token average), got {length_penalty!r}"
        )


def check_attends(decoder: Decoder, name: str | None = None) -> None:
    """Refuse to ask a decoder that does not attend for attention weights, naming it (``name``: its
    registry name, when the caller knows it)."""
    if not getattr(decoder, "attends", False):
        name = name or getattr(decoder, "registry_name", None) or type(decoder).__name__
        raise ZooError(
            f"decoder {name!r} has no attention over the image grid (it does not set attends = True and "
            f"implement last_attention), so there are no attention maps to show. Use a checkpoint of an "
            f"attention decoder such as 'gru-attn', or drop --attention / return_attention."
        )


def check_sampling_options(n: int, temperature: float, top_k: int, top_p: float) -> None:
    """Refuse sampling settings before any image is decoded; messages name the option and its flag."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise DecodingOptionError(f"n (-n/--num) must be an integer ≥ 1 (captions per image), got {n!r}")
    if (
        isinstance(temperature, bool) or not isinstance(temperature, numbers.Real)
        or not math.isfinite(temperature) or temperature <= 0
    ):
        raise DecodingOptionError(
            f"temperature (--temperature) must be a finite number > 0 (1 = the model's distribution; for "
            f"greedy decoding use --beam 1), got {temperature!r}"
        )
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 0:
        raise DecodingOptionError(
            f"top_k (--top-k) must be an integer ≥ 0 (0 = no limit, 1 = greedy), got {top_k!r}"
        )
    if (
        isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not math.isfinite(top_p)
        or not 0 < top_p <= 1
    ):
        raise DecodingOptionError(
            f"top_p (--top-p) must be a number in (0, 1] (1 = no nucleus filtering; 0.9 is usual), "
            f"got {top_p!r}"
        )
