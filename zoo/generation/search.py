"""Beam search for every decoder, through the decoder contract (``zoo.contracts.decoder``).

``sample`` draws ``n`` captions per image (multinomial, with temperature, top-k and nucleus filtering),
batched the same way: all images × samples in one tensor step, finished rows leave the computation. It is
the rollout of self-critical training, so it runs every training step.

``beam_search`` is batched: all images × beams advance in one tensor step, and images that are done leave
the computation (their rows are dropped from memory and state). The per-step bookkeeping (which
candidates finish, which live on, which images are done) is tensor operations too, with one transfer per
step of only the hypotheses that just finished. ``beam_search_reference`` decodes one image at a time
with the same rules, in plain Python; it exists to check and to benchmark the batched one.

Both searches take ``constraints`` (``zoo.generation.constraints.Constraints``: minimum length, no repeated n-gram,
no <unk>, no bad ending), applied to each step's log-probabilities before anything is ranked or drawn,
so they follow the very same rules; forbidden tokens get -inf, allowed ones keep their log-probability.

Rules (shared by both):
* Scores are sums of log-probabilities. A hypothesis ends when it emits <eos> (the <eos> counts as a
  token) or reaches ``max_len`` tokens. Its final score is ``logprob / length ** length_penalty``
  (``length_penalty=0`` ranks by raw log-probability).
* Each step every live beam proposes its continuations; the top ``2 * beam`` candidates (by raw score,
  ties broken by beam then token id) are ranked. A candidate ending in <eos> (or any candidate at step
  ``max_len``) is finished if it ranks within the top ``beam``; lower-ranked <eos> candidates are
  dropped. The best ``beam`` candidates not ending in <eos> live on (``2 * beam`` guarantees enough).
* An image is done when its best live beam, scored at its current length (its final score if it could
  end right now), is no better than its best finished hypothesis, or at ``max_len``. The best finished
  hypothesis wins. With ``length_penalty=0`` the stop is exact: log-probabilities only fall, so no live
  beam could still win. With a length penalty it is the usual heuristic (as in Hugging Face's
  ``BeamHypotheses.is_done``).
* ``beam_size=1`` is exactly greedy decoding for any ``length_penalty``: the arg-max token each step,
  stopping at the first <eos> (an arg-max <eos> outscores the live beam at the same length).

Why these rules, rather than "finish every <eos> among the 2·beam candidates; an image is done once it
has ``beam`` finished hypotheses" (an earlier version): that made beam 1 differ from greedy (a runner-up
<eos> ended the caption while the arg-max word went on), and let ``beam`` short, improbable captions that
finished early end the search while a far more probable beam was still growing, so beam 3 often found
captions of lower log-probability than greedy (tests/test_decoders.py checks it does not).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from zoo.contracts.probe import check_step_logits
from zoo.contracts.decoder import Decoder
from zoo.errors import ZooError
from zoo.contracts.features import Features, select_batch


@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids, <eos> included if emitted
    logprob: float  # sum of log-probabilities
    score: float  # length-normalised score used for ranking
    attention: torch.Tensor | None = None  # (len(tokens), N) weights over the grid, when asked for


def _final_score(logprob: float, length: int, length_penalty: float) -> float:
    return logprob / (max(length, 1) ** length_penalty) if length_penalty else logprob


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


class LogitConstraints(Protocol):
    """What both searches ask of a ``constraints`` object (``zoo.generation.constraints.Constraints``): the
    log-probabilities of the next token with forbidden tokens set to -inf, given each row's history."""

    def apply(self, logp: torch.Tensor, history: torch.Tensor, eos_id: int) -> torch.Tensor: ...


def _check_constraints(constraints: Any, max_len: int) -> None:
    """A minimum length the maximum length leaves no room for is refused (``--min-len``)."""
    min_len = getattr(constraints, "min_len", 0)
    if min_len:
        from zoo.generation.constraints import check_constraint_options

        check_constraint_options(min_len, getattr(constraints, "no_repeat_ngram", 0), max_len)


@dataclass
class Samples:
    """``n`` sampled captions per image. Rows ``i*n .. i*n+n-1`` are image i's."""

    tokens: torch.Tensor  # (B*n, L) long, L = the longest sample; after a sample's end: pad_id
    lengths: torch.Tensor  # (B*n,) tokens per sample, <eos> included when emitted
    logprobs: torch.Tensor  # (B*n,) summed model log-probabilities of the tokens drawn


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


@torch.no_grad()
def sample(
    decoder: Decoder,
    features: Features,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
    n: int = 1,
    max_len: int = 20,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    constraints: LogitConstraints | None = None,
) -> Samples:
    """``n`` captions per image drawn from the decoder, all ``B * n`` rows advancing in one tensor step.

    Each step: the model's log-probabilities, then the ``constraints`` (forbidden tokens get -inf), then
    ``temperature``, ``top_k`` and ``top_p`` (nucleus) filtering, then one multinomial draw per row
    (``top_k=1`` takes the arg-max: exactly greedy decoding). A row ends at <eos> or after ``max_len``
    tokens and leaves the computation (its state and memory rows are dropped). ``logprobs`` are the
    model's own log-probabilities (before temperature, filtering and constraints) of the drawn tokens,
    so they equal a teacher-forced pass over ``tokens``. ``generator`` makes the draws reproducible.
    """
    check_decoding_options(1, max_len)
    check_sampling_options(n, temperature, top_k, top_p)
    _check_constraints(constraints, max_len)
    B = features.batch_size
    R = B * n
    device = features.grid.device
    memory = decoder.prepare(features)
    state = decoder.init_state(memory)
    # the first step is the same for all n samples of an image: run it once, then expand to n rows each
    logits, state = decoder.step(torch.full((B,), bos_id, dtype=torch.long, device=device), state, memory)
    check_step_logits(decoder, logits, B)
    expand = torch.arange(B, device=device).repeat_interleave(n)
    if n > 1:
        logits = logits.index_select(0, expand)
        memory = select_batch(memory, expand)
        state = decoder.reorder_state(state, expand)
    tokens = torch.full((R, max_len), pad_id, dtype=torch.long, device=device)
    lengths = torch.full((R,), max_len, dtype=torch.long, device=device)
    logprobs = torch.zeros(R, dtype=torch.float32, device=device)
    live = torch.arange(R, device=device)  # the output row of each row still decoding
    for t in range(max_len):
        if t > 0:
            logits, state = decoder.step(words, state, memory)
            check_step_logits(decoder, logits, words.shape[0])
        logp = torch.log_softmax(logits.float(), dim=-1)
        allowed = logp if constraints is None else constraints.apply(logp, tokens[live, :t], eos_id)
        words = _draw(allowed, temperature, top_k, top_p, generator)
        tokens[live, t] = words
        logprobs.index_add_(0, live, logp.gather(1, words.unsqueeze(1)).squeeze(1))
        ended = words == eos_id
        if t == max_len - 1 or not bool(ended.any()):
            continue
        lengths[live[ended]] = t + 1
        keep = (~ended).nonzero().squeeze(1)
        if keep.numel() == 0:
            break
        live, words = live[keep], words[keep]
        memory = select_batch(memory, keep)
        state = decoder.reorder_state(state, keep)
    return Samples(tokens[:, : int(lengths.max())], lengths, logprobs)


def _draw(
    logp: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """One token per row from ``softmax(logp / temperature)`` restricted to the top ``top_k`` tokens and
    then to the smallest set whose probability reaches ``top_p``; -inf entries are never drawn."""
    if top_k == 1:
        return logp.argmax(dim=-1)
    scores = logp / temperature if temperature != 1.0 else logp
    V = scores.shape[-1]
    if 0 < top_k < V:
        kth = scores.topk(top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        # drop a token when the tokens ranked above it already reach top_p (the best one always stays)
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        scores = scores.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def beam_search(
    decoder: Decoder,
    features: Features,
    *,
    bos_id: int,
    eos_id: int,
    beam_size: int = 3,
    max_len: int = 20,
    length_penalty: float = 1.0,
    return_attention: bool = False,
    constraints: LogitConstraints | None = None,
) -> list[Hypothesis]:
    """Best hypothesis per image, batched over images and beams; ``constraints`` (``zoo.generation.constraints``)
    forbid tokens before the candidates are ranked.

    ``return_attention=True`` (decoders with ``attends``, see ``zoo.contracts.decoder``) also gives each
    hypothesis its ``attention`` (T, N) on the CPU: row t is the weights the decoder used to predict
    token t of the winning hypothesis. They are tracked per beam only when asked for."""
    check_decoding_options(beam_size, max_len, length_penalty)
    _check_constraints(constraints, max_len)
    if return_attention:
        check_attends(decoder)
    B = features.batch_size
    K = beam_size
    device = features.grid.device
    memory = decoder.prepare(features)
    state = decoder.init_state(memory)
    # the first step is the same for all K beams of an image: run it once per image, then expand every
    # image to K beam rows: row = block * K + beam, one block of K rows per live image
    first_logits, state = decoder.step(
        torch.full((B,), bos_id, dtype=torch.long, device=device), state, memory
    )
    check_step_logits(decoder, first_logits, B)  # a contract violation is a ContractError, not an IndexError
    expand = torch.arange(B, device=device).repeat_interleave(K)
    if return_attention:  # weights of every live beam's tokens so far, (n*K, t, N), in history's rows
        first_alpha = decoder.last_attention(state).float().index_select(0, expand)
        trail = first_alpha.new_zeros((B * K, 0, first_alpha.shape[-1]))
    memory = select_batch(memory, expand)
    state = decoder.reorder_state(state, expand)
    live = torch.arange(B, device=device)  # original image index of each live block
    history = torch.zeros((B * K, 0), dtype=torch.long, device=device)
    scores = torch.zeros((B, K), device=device)
    scores[:, 1:] = float("-inf")  # at the start all beams are the same: keep one
    best_final = torch.full((B,), float("-inf"), dtype=torch.float64, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]

    for t in range(max_len):
        if t == 0:
            logits = first_logits.index_select(0, expand)
        else:
            logits, state = decoder.step(tokens, state, memory)
            check_step_logits(decoder, logits, tokens.shape[0])
        if return_attention:
            trail = torch.cat([trail, (first_alpha if t == 0 else decoder.last_attention(state).float()).unsqueeze(1)], 1)
        logp = torch.log_softmax(logits.float(), dim=-1)  # (n*K, V)
        if constraints is not None:
            logp = constraints.apply(logp, history, eos_id)
        n, V = live.shape[0], logp.shape[-1]
        last = t == max_len - 1
        cand = (scores.unsqueeze(-1) + logp.view(n, K, V)).view(n, K * V)
        width = min(2 * K, K * V)
        top_scores, top_idx = _topk_by_rank(cand, width)  # (n, width), rank order
        words = top_idx % V
        rows = torch.arange(n, device=device).unsqueeze(1) * K + top_idx // V  # current row of the parent
        rank = torch.arange(width, device=device)
        valid = top_scores > float("-inf")
        ends = valid & ((words == eos_id) | last)
        fin = ends & (rank < K)
        goes_on = valid & ~ends
        slot = goes_on & (goes_on.long().cumsum(1) <= K)

        fin_j, fin_c = fin.nonzero(as_tuple=True)
        if fin_j.numel():  # the only transfer: hypotheses that finish now, all of length t + 1
            fin_img = live[fin_j]
            fin_raw = top_scores[fin_j, fin_c]
            fin_final = _final_scores(fin_raw.double(), t + 1, length_penalty)
            best_final.scatter_reduce_(0, fin_img, fin_final, reduce="amax")
            seqs = torch.cat([history[rows[fin_j, fin_c]], words[fin_j, fin_c].unsqueeze(1)], dim=1)
            atts = trail[rows[fin_j, fin_c]].cpu() if return_attention else [None] * len(seqs)
            for img, seq, s, f, a in zip(fin_img.tolist(), seqs.tolist(), fin_raw.tolist(), fin_final.tolist(), atts):
                finished[img].append(Hypothesis(seq, s, f, a))
        if last:
            break
        # the K surviving candidates of each block, in rank order (unfilled slots score -inf)
        order = torch.where(slot, rank, rank + width).argsort(dim=1)[:, :K]
        picked = slot.gather(1, order)
        new_scores = top_scores.gather(1, order).masked_fill(~picked, float("-inf"))
        could_win = _final_scores(new_scores[:, 0].double(), t + 1, length_penalty) > best_final[live]
        keep = (picked[:, 0] & could_win).nonzero().squeeze(1)
        if keep.numel() == 0:
            break
        scores = new_scores[keep]
        own_row = (keep * K).unsqueeze(1).expand(-1, K)
        new_rows = torch.where(picked[keep], rows[keep].gather(1, order[keep]), own_row).reshape(-1)
        tokens = words[keep].gather(1, order[keep]).reshape(-1)
        history = torch.cat([history.index_select(0, new_rows), tokens.unsqueeze(1)], dim=1)
        if return_attention:
            trail = trail.index_select(0, new_rows)
        state = decoder.reorder_state(state, new_rows)
        if keep.shape[0] != n:  # images that are done leave the computation
            mem_rows = (keep.unsqueeze(1) * K + torch.arange(K, device=device)).reshape(-1)
            memory = select_batch(memory, mem_rows)
            live = live[keep]

    return [max(f, key=lambda h: h.score) for f in finished]


def _final_scores(logprob: torch.Tensor, length: int, length_penalty: float) -> torch.Tensor:
    """``_final_score`` for a tensor of raw log-probs sharing one length (float64, to match it exactly)."""
    return logprob / (max(length, 1) ** length_penalty) if length_penalty else logprob


def _topk_by_rank(cand: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``width`` per row, best first, equal scores in increasing (beam, token) index as the rules say
    (``topk`` alone leaves the order of ties unspecified): sort by index, then stably by score."""
    top_scores, top_idx = cand.topk(width, dim=-1)
    by_index = top_idx.argsort(dim=-1)
    top_scores, top_idx = top_scores.gather(-1, by_index), top_idx.gather(-1, by_index)
    top_scores, by_score = top_scores.sort(dim=-1, descending=True, stable=True)
    return top_scores, top_idx.gather(-1, by_score)


@torch.no_grad()
def beam_search_reference(
    decoder: Decoder,
    features: Features,
    *,
    bos_id: int,
    eos_id: int,
    beam_size: int = 3,
    max_len: int = 20,
    length_penalty: float = 1.0,
    constraints: Any = None,
) -> list[Hypothesis]:
    """One image at a time, with lists of hypotheses: slow and plain, the yardstick for ``beam_search``
    (its constraints through ``Constraints.apply_reference``, one hypothesis at a time)."""
    check_decoding_options(beam_size, max_len, length_penalty)
    _check_constraints(constraints, max_len)
    out = []
    for i in range(features.batch_size):
        feats = features.index_select(torch.tensor([i], device=features.grid.device))
        memory = decoder.prepare(feats)
        beams: list[tuple[float, list[int], Any]] = [(0.0, [], decoder.init_state(memory))]
        finished: list[Hypothesis] = []
        for t in range(max_len):
            cands = []
            for b, (s, seq, st) in enumerate(beams):
                prev = torch.tensor([seq[-1] if seq else bos_id], device=feats.grid.device)
                logits, new_st = decoder.step(prev, st, memory)
                check_step_logits(decoder, logits, 1)
                logp = torch.log_softmax(logits.float(), dim=-1)[0]
                if constraints is not None:
                    logp = constraints.apply_reference(logp, seq, eos_id)
                top = (s + logp).topk(min(2 * beam_size, logp.shape[0]))
                for val, w in zip(top.values.tolist(), top.indices.tolist()):
                    cands.append((val, b, w, new_st))
            # same order as the batched topk over beam-major (beam, word) candidates
            cands.sort(key=lambda c: (-c[0], c[1], c[2]))
            cands = cands[: 2 * beam_size]
            new_beams = []
            last = t == max_len - 1
            for rank, (val, b, w, st) in enumerate(cands):
                if val == float("-inf"):
                    break
                seq = beams[b][1] + [w]
                if w == eos_id or last:
                    if rank < beam_size:
                        finished.append(Hypothesis(seq, val, _final_score(val, len(seq), length_penalty)))
                    continue
                if len(new_beams) < beam_size:
                    new_beams.append((val, seq, st))
            if last or not new_beams:
                break
            best = max((h.score for h in finished), default=float("-inf"))
            if _final_score(new_beams[0][0], t + 1, length_penalty) <= best:
                break  # no live beam can win any more
            beams = new_beams
        out.append(max(finished, key=lambda h: h.score))
    return out
