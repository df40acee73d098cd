"""Sampling for every decoder, through the decoder contract (``zoo.contracts.decoder``).

``sample`` draws ``n`` captions per image (multinomial, with temperature, top-k and nucleus filtering),
batched the same way: all images × samples in one tensor step, finished rows leave the computation. It is
the rollout of self-critical training, so it runs every training step.

Like beam search (``zoo.generation.beam``), it takes ``constraints`` (``zoo.generation.constraints.Constraints``: minimum length, no repeated n-gram,
no <unk>, no bad ending), applied to each step's log-probabilities before anything is ranked or drawn,
so they follow the very same rules; forbidden tokens get -inf, allowed ones keep their log-probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zoo.contracts.decoder import Decoder
from zoo.contracts.features import Features, select_batch
from zoo.contracts.probe import check_step_logits
from zoo.generation.checks import check_decoding_options, check_sampling_options
from zoo.generation.constraints import LogitConstraints, check_constraints


@dataclass
class Samples:
    """``n`` sampled captions per image. Rows ``i*n .. i*n+n-1`` are image i's."""

    tokens: torch.Tensor  # (B*n, L) long, L = the longest sample; after a sample's end: pad_id
    lengths: torch.Tensor  # (B*n,) tokens per sample, <eos> included when emitted
    logprobs: torch.Tensor  # (B*n,) summed model log-probabilities of the tokens drawn


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
    check_constraints(constraints, max_len)
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
