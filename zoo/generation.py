"""Beam search for every decoder, through the decoder contract (``zoo.decoder``).

``beam_search`` is batched: all images × beams advance in one tensor step, and images whose beams are
finished leave the computation (their rows are dropped from memory and state). ``beam_search_reference``
decodes one image at a time with the same rules; it exists to check and to benchmark the batched one.

Rules (shared by both):
* Scores are sums of log-probabilities. A hypothesis ends when it emits <eos> (the <eos> counts as a
  token) or reaches ``max_len`` tokens. Its final score is ``logprob / length ** length_penalty``
  (``length_penalty=0`` ranks by raw log-probability).
* Each step every live beam proposes its best continuations; of the top ``2 * beam`` candidates (by raw
  score) those ending in <eos> are finished, the best ``beam`` others live on. An image is done when it
  has ``beam`` finished hypotheses or reaches ``max_len``; the best final score wins.
* ``beam_size=1`` is greedy decoding.
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
    if beam_size < 1:
        raise ValueError(f"beam_size must be ≥ 1, got {beam_size}")
    if max_len < 1:
        raise ValueError(f"max_len must be ≥ 1, got {max_len}")
    B = features.batch_size
    K = beam_size
    device = features.grid.device
    memory = decoder.prepare(features)
    # expand every image to K beam rows: row = image * K + beam
    expand = torch.arange(B, device=device).repeat_interleave(K)
    memory = select_batch(memory, expand)
    state = decoder.init_state(memory)
    live = list(range(B))  # original image index of each live block of K rows
    tokens = torch.full((B * K,), bos_id, dtype=torch.long, device=device)
    history = torch.zeros((B * K, 0), dtype=torch.long, device=device)
    scores = torch.zeros((B, K), device=device)
    scores[:, 1:] = float("-inf")  # at the start all beams are the same: keep one
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]

    for t in range(max_len):
        logits, state = decoder.step(tokens, state, memory)
        logp = torch.log_softmax(logits.float(), dim=-1)  # (n*K, V)
        n = len(live)
        V = logp.shape[-1]
        cand = (scores.unsqueeze(-1) + logp.view(n, K, V)).view(n, K * V)
        top_scores, top_idx = cand.topk(min(2 * K, K * V), dim=-1)  # (n, 2K)
        beam_idx = top_idx // V
        word_idx = top_idx % V
        is_eos = word_idx == eos_id
        last = t == max_len - 1
        # move to CPU once per step for the bookkeeping of finished hypotheses
        ts, bi, wi, ie = top_scores.cpu(), beam_idx.cpu(), word_idx.cpu(), is_eos.cpu()
        hist_cpu = history.cpu() if (ie.any() or last) else None
        new_scores = torch.full((n, K), float("-inf"))
        new_rows = torch.zeros((n, K), dtype=torch.long)
        new_words = torch.zeros((n, K), dtype=torch.long)
        keep_block = []
        for j in range(n):
            img = live[j]
            fin = finished[img]
            k = 0
            for c in range(ts.shape[1]):
                s = float(ts[j, c])
                if s == float("-inf"):
                    break
                row = j * K + int(bi[j, c])
                if bool(ie[j, c]) or last:
                    if len(fin) < K:
                        seq = hist_cpu[row].tolist() + [int(wi[j, c])]  # type: ignore[index]
                        fin.append(Hypothesis(seq, s, _final_score(s, len(seq), length_penalty)))
                    continue
                if k < K:
                    new_scores[j, k] = s
                    new_rows[j, k] = row
                    new_words[j, k] = wi[j, c]
                    k += 1
            if len(fin) < K and not last and k > 0:
                keep_block.append(j)
        if not keep_block:
            break
        keep = torch.tensor(keep_block, dtype=torch.long)
        rows = new_rows[keep].view(-1).to(device)
        scores = new_scores[keep].to(device)
        tokens = new_words[keep].view(-1).to(device)
        history = torch.cat([history.index_select(0, rows), tokens.unsqueeze(1)], dim=1)
        state = decoder.reorder_state(state, rows)
        if len(keep_block) != n:  # images that are done leave the computation
            mem_rows = (keep.to(device).unsqueeze(1) * K + torch.arange(K, device=device)).view(-1)
            memory = select_batch(memory, mem_rows)
        live = [live[j] for j in keep_block]

    return [max(f, key=lambda h: h.score) for f in finished]


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
            for val, b, w, st in cands:
                seq = beams[b][1] + [w]
                if w == eos_id or last:
                    if len(finished) < beam_size:
                        finished.append(Hypothesis(seq, val, _final_score(val, len(seq), length_penalty)))
                    continue
                if len(new_beams) < beam_size:
                    new_beams.append((val, seq, st))
            if len(finished) >= beam_size or last or not new_beams:
                break
            beams = new_beams
        out.append(max(finished, key=lambda h: h.score))
    return out
