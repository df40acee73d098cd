"""Beam search for every decoder, through the decoder contract (``zoo.contracts.decoder``).

``beam_search`` is batched: all images × beams advance in one tensor step, and images that are done leave
the computation (their rows are dropped from memory and state). The per-step bookkeeping (which
candidates finish, which live on, which images are done) is tensor operations too, with one transfer per
step of only the hypotheses that just finished. ``beam_search_reference`` decodes one image at a time
with the same rules, in plain Python; it exists to check and to benchmark the batched one.

Beam search and sampling (``zoo.generation.sampling``) take ``constraints`` (``zoo.generation.constraints.Constraints``: minimum length, no repeated n-gram,
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

from dataclasses import dataclass
from typing import Any

import torch

from zoo.contracts.decoder import Decoder
from zoo.contracts.features import Features, select_batch
from zoo.contracts.probe import check_step_logits
from zoo.generation.checks import check_attends, check_decoding_options
from zoo.generation.constraints import LogitConstraints, check_constraints


@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids, <eos> included if emitted
    logprob: float  # sum of log-probabilities
    score: float  # length-normalised score used for ranking
    attention: torch.Tensor | None = None  # (len(tokens), N) weights over the grid, when asked for


def _final_score(logprob: float, length: int, length_penalty: float) -> float:
    return logprob / (max(length, 1) ** length_penalty) if length_penalty else logprob


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
    check_constraints(constraints, max_len)
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
    check_constraints(constraints, max_len)
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
