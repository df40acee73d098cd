"""Beam search for every decoder, through the decoder contract (``zoo.decoder``).

``beam_search`` is batched: all images × beams advance in one tensor step, and images whose beams are
finished leave the computation (their rows are dropped from memory and state). The per-step bookkeeping
(which candidates finish, which live on, which images are done) is tensor operations too, with one
transfer per step of only the hypotheses that just finished. ``beam_search_reference`` decodes one image
at a time with the same rules, in plain Python; it exists to check and to benchmark the batched one.

Rules (shared by both):
* Scores are sums of log-probabilities. A hypothesis ends when it emits <eos> (the <eos> counts as a
  token) or reaches ``max_len`` tokens. Its final score is ``logprob / length ** length_penalty``
  (``length_penalty=0`` ranks by raw log-probability).
* Each step every live beam proposes its best continuations; the top ``2 * beam`` candidates (by raw
  score, ties broken by beam then token id) are ranked. A candidate ending in <eos> (or any candidate at
  step ``max_len``) is finished only if it ranks within the top ``beam``, and while the image has fewer
  than ``beam`` finished hypotheses; lower-ranked <eos> candidates are dropped. The best ``beam``
  candidates not ending in <eos> live on (the ``2 * beam`` guarantee enough of them). An image is done
  when it has ``beam`` finished hypotheses or reaches ``max_len``; the best final score wins.
* ``beam_size=1`` is exactly greedy decoding: the arg-max token each step, stopping at <eos>. (Finishing
  <eos> candidates ranked below the top ``beam`` would break this: with beam 1 the runner-up <eos> would
  end the caption while the arg-max word still wanted to go on.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from zoo.decoder import Decoder
from zoo.features import Features, select_batch


@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids, <eos> included if emitted
    logprob: float  # sum of log-probabilities
    score: float  # length-normalised score used for ranking


def _final_score(logprob: float, length: int, length_penalty: float) -> float:
    return logprob / (max(length, 1) ** length_penalty) if length_penalty else logprob


def _check(beam_size: int, max_len: int) -> None:
    if beam_size < 1:
        raise ValueError(f"beam_size must be ≥ 1, got {beam_size}")
    if max_len < 1:
        raise ValueError(f"max_len must be ≥ 1, got {max_len}")


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
) -> list[Hypothesis]:
    """Best hypothesis per image, batched over images and beams."""
    _check(beam_size, max_len)
    B = features.batch_size
    K = beam_size
    device = features.grid.device
    memory = decoder.prepare(features)
    # expand every image to K beam rows: row = block * K + beam, one block of K rows per live image
    expand = torch.arange(B, device=device).repeat_interleave(K)
    memory = select_batch(memory, expand)
    state = decoder.init_state(memory)
    live = torch.arange(B, device=device)  # original image index of each live block
    tokens = torch.full((B * K,), bos_id, dtype=torch.long, device=device)
    history = torch.zeros((B * K, 0), dtype=torch.long, device=device)
    scores = torch.zeros((B, K), device=device)
    scores[:, 1:] = float("-inf")  # at the start all beams are the same: keep one
    n_finished = torch.zeros(B, dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]

    for t in range(max_len):
        logits, state = decoder.step(tokens, state, memory)
        logp = torch.log_softmax(logits.float(), dim=-1)  # (n*K, V)
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
        room = (K - n_finished[live]).unsqueeze(1)
        fin &= fin.long().cumsum(1) <= room
        goes_on = valid & ~ends
        slot = goes_on & (goes_on.long().cumsum(1) <= K)

        fin_j, fin_c = fin.nonzero(as_tuple=True)
        if fin_j.numel():  # the only transfer: hypotheses that finish now
            seqs = torch.cat([history[rows[fin_j, fin_c]], words[fin_j, fin_c].unsqueeze(1)], dim=1)
            for img, seq, s in zip(live[fin_j].tolist(), seqs.tolist(), top_scores[fin_j, fin_c].tolist()):
                finished[img].append(Hypothesis(seq, s, _final_score(s, len(seq), length_penalty)))
            n_finished.index_add_(0, live[fin_j], torch.ones_like(fin_j))
        if last:
            break
        keep = ((n_finished[live] < K) & slot.any(1)).nonzero().squeeze(1)
        if keep.numel() == 0:
            break
        # the K surviving candidates of each kept block, in rank order (unfilled slots score -inf)
        order = torch.where(slot, rank, rank + width)[keep].argsort(dim=1)[:, :K]
        picked = slot[keep].gather(1, order)
        scores = top_scores[keep].gather(1, order).masked_fill(~picked, float("-inf"))
        own_row = (keep * K).unsqueeze(1).expand(-1, K)
        new_rows = torch.where(picked, rows[keep].gather(1, order), own_row).reshape(-1)
        tokens = words[keep].gather(1, order).reshape(-1)
        history = torch.cat([history.index_select(0, new_rows), tokens.unsqueeze(1)], dim=1)
        state = decoder.reorder_state(state, new_rows)
        if keep.shape[0] != n:  # images that are done leave the computation
            mem_rows = (keep.unsqueeze(1) * K + torch.arange(K, device=device)).reshape(-1)
            memory = select_batch(memory, mem_rows)
            live = live[keep]

    return [max(f, key=lambda h: h.score) for f in finished]


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
) -> list[Hypothesis]:
    """One image at a time, with lists of hypotheses: slow and plain, the yardstick for ``beam_search``."""
    _check(beam_size, max_len)
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
                logp = torch.log_softmax(logits.float(), dim=-1)[0]
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
                    if rank < beam_size and len(finished) < beam_size:
                        finished.append(Hypothesis(seq, val, _final_score(val, len(seq), length_penalty)))
                    continue
                if len(new_beams) < beam_size:
                    new_beams.append((val, seq, st))
            if len(finished) >= beam_size or last or not new_beams:
                break
            beams = new_beams
        out.append(max(finished, key=lambda h: h.score))
    return out
