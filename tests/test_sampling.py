"""``zoo.generation.sample``: the batched sampler (the rollouts of self-critical training and
``generate(sample=True)``): its draws follow the model's distribution, ``top_k=1`` is greedy, a
generator makes it reproducible, rows ``i*n .. i*n+n-1`` belong to image i, and bad settings are refused
with the flag named."""

from __future__ import annotations

import math

import pytest
import torch

import zoo
from zoo.errors import ZooError
from zoo.generation.sampling import Samples, sample
from zoo.generation.beam import beam_search
from tests.helpers import TableDecoder
from tests.test_beam_search import (  # noqa: F401 (one_thread: the module's autouse fixture)
    BOS, EOS, MAX_LEN, NAMES, PAD, features, one_thread, partially_trained,
)


class Bigram(TableDecoder):
    """A random bigram table: the probability of any sequence is known exactly."""

    def __init__(self, vocab_size: int = 6, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        super().__init__(torch.randn(vocab_size, vocab_size, generator=g))


@pytest.fixture(scope="module")
def decoders() -> dict[str, zoo.Decoder]:
    return {name: partially_trained(name) for name in NAMES}


def test_multinomial_at_temperature_one_follows_the_model() -> None:
    """Frequencies of the first token and of (first, second) pairs match the model's probabilities
    within 5 standard errors, over 40,000 draws."""
    dec = Bigram()
    draws = 40_000
    s = sample(
        dec, features(1, seed=0), bos_id=BOS, eos_id=EOS, n=draws, max_len=2,
        generator=torch.Generator().manual_seed(3),
    )
    p = torch.softmax(dec.table.double(), dim=-1)
    first = s.tokens[:, 0]
    freq = torch.bincount(first, minlength=6).double() / draws
    se = (p[BOS] * (1 - p[BOS]) / draws).sqrt()
    assert ((freq - p[BOS]).abs() <= 5 * se + 1e-9).all(), (freq, p[BOS])
    # second tokens: joint probabilities p(w1) p(w2 | w1) for rows that did not end at step 1
    go_on = first != EOS
    pairs = first[go_on] * 6 + s.tokens[go_on, 1]
    joint = torch.bincount(pairs, minlength=36).double() / draws
    expected = (p[BOS].unsqueeze(1) * p).reshape(-1)
    expected[EOS * 6 : EOS * 6 + 6] = 0
    se = (expected * (1 - expected) / draws).sqrt()
    assert ((joint - expected).abs() <= 5 * se + 1e-9).all()
    # the log-probabilities reported are those of the drawn tokens under the model
    logp = torch.log_softmax(dec.table.double(), dim=-1)
    manual = logp[BOS, first] + torch.where(go_on, logp[first, s.tokens[:, 1]], torch.zeros(()).double())
    torch.testing.assert_close(s.logprobs.double(), manual, atol=1e-5, rtol=0)


def test_temperature_top_k_and_top_p_reshape_the_distribution() -> None:
    dec = Bigram(seed=1)
    draws = 20_000
    kw = dict(bos_id=BOS, eos_id=EOS, n=draws, max_len=1)
    p = torch.softmax(dec.table[BOS].double(), dim=-1)
    order = p.argsort(descending=True)
    g = torch.Generator().manual_seed(0)
    # top-k 2: only the two most probable tokens, in their relative proportion
    top2 = sample(dec, features(1, 0), top_k=2, generator=g, **kw).tokens[:, 0]
    assert set(top2.tolist()) == set(order[:2].tolist())
    share = (top2 == order[0]).double().mean()
    want = p[order[0]] / p[order[:2]].sum()
    assert abs(share - want) < 5 * math.sqrt(want * (1 - want) / draws)
    # nucleus: the smallest set of top tokens whose mass reaches top_p
    top_p = float(p[order[:3]].sum()) - 1e-3  # needs exactly three tokens
    nucleus = sample(dec, features(1, 0), top_p=top_p, generator=g, **kw).tokens[:, 0]
    assert set(nucleus.tolist()) == set(order[:3].tolist())
    # temperature 0.5 squares the probabilities (renormalised)
    cold = sample(dec, features(1, 0), temperature=0.5, generator=g, **kw).tokens[:, 0]
    p2 = p**2 / (p**2).sum()
    freq = torch.bincount(cold, minlength=6).double() / draws
    assert ((freq - p2).abs() <= 5 * (p2 * (1 - p2) / draws).sqrt() + 1e-9).all()


@pytest.mark.parametrize("name", NAMES)
def test_top_k_one_is_greedy(decoders: dict, name: str) -> None:
    dec = decoders[name]
    feats = features(7, seed=9)
    greedy = beam_search(dec, feats, bos_id=BOS, eos_id=EOS, beam_size=1, max_len=MAX_LEN)
    s = sample(dec, feats, bos_id=BOS, eos_id=EOS, n=3, max_len=MAX_LEN, top_k=1)
    for i, h in enumerate(greedy):
        for r in range(i * 3, i * 3 + 3):
            assert s.tokens[r, : s.lengths[r]].tolist() == h.tokens
            assert float(s.logprobs[r]) == pytest.approx(h.logprob, abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_rows_belong_to_their_image_and_logprobs_match_teacher_forcing(decoders: dict, name: str) -> None:
    """Row r is image r // n: its summed log-probability equals a teacher-forced pass of image r // n
    over its tokens. The samples end at different lengths, so finished rows really left the batch."""
    dec = decoders[name]
    B, n = 5, 4
    feats = features(B, seed=11)
    s = sample(dec, feats, bos_id=BOS, eos_id=EOS, n=n, max_len=MAX_LEN,
               generator=torch.Generator().manual_seed(0))
    assert isinstance(s, Samples)
    assert s.tokens.shape == (B * n, int(s.lengths.max())) and s.tokens.dtype == torch.long
    assert len(set(s.lengths.tolist())) >= 3
    for r in range(B * n):
        L = int(s.lengths[r])
        assert (s.tokens[r, L:] == PAD).all()
        assert EOS not in s.tokens[r, : L - 1].tolist()
        assert s.tokens[r, L - 1] == EOS or L == MAX_LEN
    rows = torch.arange(B).repeat_interleave(n)
    inputs = torch.cat([torch.full((B * n, 1), BOS), s.tokens[:, :-1]], dim=1)
    with torch.no_grad():
        logp = torch.log_softmax(dec(feats.index_select(rows), inputs).float(), dim=-1)
    per_token = logp.gather(2, s.tokens.unsqueeze(2)).squeeze(2)
    mask = torch.arange(s.tokens.shape[1]) < s.lengths.unsqueeze(1)
    torch.testing.assert_close(s.logprobs, (per_token * mask).sum(1), atol=1e-4, rtol=0)


def test_generator_makes_it_reproducible(decoders: dict) -> None:
    dec = decoders["gru-attn"]
    feats = features(4, seed=2)
    kw = dict(bos_id=BOS, eos_id=EOS, n=5, max_len=MAX_LEN)
    a = sample(dec, feats, generator=torch.Generator().manual_seed(7), **kw)
    b = sample(dec, feats, generator=torch.Generator().manual_seed(7), **kw)
    c = sample(dec, feats, generator=torch.Generator().manual_seed(8), **kw)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    assert a.tokens.shape != c.tokens.shape or not torch.equal(a.tokens, c.tokens)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("n", 0, r"n \(-n/--num\) must be an integer ≥ 1"),
        ("temperature", 0.0, r"temperature \(--temperature\) must be a finite number > 0"),
        ("temperature", float("inf"), r"--temperature"),
        ("top_k", -1, r"top_k \(--top-k\) must be an integer ≥ 0"),
        ("top_p", 0.0, r"top_p \(--top-p\) must be a number in \(0, 1\]"),
        ("top_p", 1.5, r"--top-p"),
        ("max_len", 0, r"max_len \(--max-len\)"),
    ],
)
def test_bad_sampling_options_are_refused_with_the_flag(option: str, value, message: str) -> None:
    with pytest.raises(ZooError, match=message):
        sample(Bigram(), features(2, 0), bos_id=BOS, eos_id=EOS, **{option: value})
