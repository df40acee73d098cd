"""The batched beam search (``zoo.generation.beam_search``) against its plain per-image reference, on the
four built-in decoders (briefly trained so that captions end at different lengths), plus the state
handling it relies on: expanding, reordering and dropping rows of a batch-first state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from zoo.errors import ZooError
from zoo.contracts.features import select_batch
from zoo.generation.beam import Hypothesis, beam_search, beam_search_reference

NAMES = ["gru", "gru-stacked", "gru-attn", "lstm"]
V, C, N = 30, 16, 5
BOS, EOS, PAD = zoo.Tokenizer.bos_id, zoo.Tokenizer.eos_id, zoo.Tokenizer.pad_id
MAX_LEN = 12


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def features(batch: int, seed: int) -> zoo.Features:
    g = torch.Generator().manual_seed(seed)
    grid = torch.randn(batch, N, C, generator=g)
    return zoo.Features(grid, grid.mean(1))


def random_captions(batch: int, seed: int) -> torch.Tensor:
    """<bos> + 1..9 random words + <eos>, padded: after a few steps of training on these, the decoder's
    captions end at image-dependent lengths, which is what exercises dropping finished images."""
    g = torch.Generator().manual_seed(seed)
    caps = torch.full((batch, MAX_LEN), PAD)
    for i in range(batch):
        n = int(torch.randint(1, 10, (1,), generator=g))
        caps[i, : n + 2] = torch.tensor([BOS, *torch.randint(4, V, (n,), generator=g).tolist(), EOS])
    return caps


def partially_trained(name: str) -> zoo.Decoder:
    """40 Adam steps on random captions: confident enough to end captions, far from converged."""
    feats, caps = features(8, seed=5), random_captions(8, seed=5)
    torch.manual_seed(0)
    opts = {"embed_size": 16, "hidden_size": 32, "dropout": 0.0}
    dec = zoo.create_decoder(name, V, C, **opts)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        logits = dec(feats, caps[:, :-1])
        nn.functional.cross_entropy(
            logits.reshape(-1, V), caps[:, 1:].reshape(-1), ignore_index=PAD
        ).backward()
        opt.step()
    return dec.eval()


@pytest.fixture(scope="module")
def decoders() -> dict[str, zoo.Decoder]:
    return {name: partially_trained(name) for name in NAMES}


def test_fixture_captions_end_at_different_lengths(decoders: dict) -> None:
    for name, dec in decoders.items():
        hyps = beam_search(dec, features(8, seed=5), bos_id=BOS, eos_id=EOS, beam_size=3, max_len=MAX_LEN)
        assert len({len(h.tokens) for h in hyps}) >= 3, name


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("beam", [1, 3, 5])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_batched_equals_reference(decoders: dict, name: str, beam: int, length_penalty: float) -> None:
    dec = decoders[name]
    feats = features(7, seed=9)
    kw = dict(bos_id=BOS, eos_id=EOS, beam_size=beam, max_len=MAX_LEN, length_penalty=length_penalty)
    got = beam_search(dec, feats, **kw)
    ref = beam_search_reference(dec, feats, **kw)
    assert [h.tokens for h in got] == [h.tokens for h in ref]
    for g, r in zip(got, ref):
        assert g.logprob == pytest.approx(r.logprob, abs=1e-5)
        assert g.score == pytest.approx(r.score, abs=1e-5)


def test_batched_equals_reference_untrained_with_short_max_len() -> None:
    """Random weights: nothing ends on <eos>, every hypothesis is cut at max_len."""
    torch.manual_seed(1)
    dec = zoo.create_decoder("gru-attn", V, C, embed_size=8, hidden_size=16, attention_size=8).eval()
    feats = features(4, seed=2)
    for beam in (1, 3, 5):
        kw = dict(bos_id=BOS, eos_id=EOS, beam_size=beam, max_len=4, length_penalty=1.0)
        got, ref = beam_search(dec, feats, **kw), beam_search_reference(dec, feats, **kw)
        assert [h.tokens for h in got] == [h.tokens for h in ref]
        assert all(len(h.tokens) <= 4 for h in got)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_greedy_is_argmax_unrolled_by_hand(decoders: dict, name: str, length_penalty: float) -> None:
    """beam 1 = greedy whatever the length penalty: the first arg-max <eos> ends the caption."""
    dec = decoders[name]
    feats = features(6, seed=3)
    hyps = beam_search(
        dec, feats, bos_id=BOS, eos_id=EOS, beam_size=1, max_len=MAX_LEN, length_penalty=length_penalty
    )
    memory = dec.prepare(feats)
    state = dec.init_state(memory)
    prev = torch.full((6,), BOS)
    expected: list[list[int]] = [[] for _ in range(6)]
    done = [False] * 6
    with torch.no_grad():
        for _ in range(MAX_LEN):
            logits, state = dec.step(prev, state, memory)
            prev = logits.argmax(-1)
            for i, w in enumerate(prev.tolist()):
                if not done[i]:
                    expected[i].append(w)
                    done[i] = w == EOS
    assert [h.tokens for h in hyps] == expected


@pytest.mark.parametrize("beam", [1, 3])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_hypotheses_are_well_formed(decoders: dict, beam: int, length_penalty: float) -> None:
    dec = decoders["gru-attn"]
    hyps = beam_search(
        dec, features(6, seed=4), bos_id=BOS, eos_id=EOS, beam_size=beam, max_len=MAX_LEN,
        length_penalty=length_penalty,
    )
    assert len(hyps) == 6 and all(isinstance(h, Hypothesis) for h in hyps)
    for h in hyps:
        assert 1 <= len(h.tokens) <= MAX_LEN
        assert EOS not in h.tokens[:-1]
        assert h.tokens[-1] == EOS or len(h.tokens) == MAX_LEN
        assert h.score == pytest.approx(h.logprob / len(h.tokens) ** length_penalty)


@pytest.mark.parametrize("name", NAMES)
def test_dropping_finished_images_leaves_the_others_alone(decoders: dict, name: str) -> None:
    """Images finish at different steps and leave the batch; each must get what it gets alone."""
    dec = decoders[name]
    feats = features(6, seed=8)
    kw = dict(bos_id=BOS, eos_id=EOS, beam_size=3, max_len=MAX_LEN, length_penalty=1.0)
    batched = beam_search(dec, feats, **kw)
    assert len({len(h.tokens) for h in batched}) >= 2
    for i in range(6):
        alone = beam_search(dec, feats.index_select(torch.tensor([i])), **kw)[0]
        assert alone.tokens == batched[i].tokens


@pytest.mark.parametrize("name", NAMES)
def test_reorder_state_then_step_equals_step_then_select(decoders: dict, name: str) -> None:
    dec = decoders[name]
    feats = features(4, seed=6)
    memory = dec.prepare(feats)
    state = dec.init_state(memory)
    prev = torch.tensor([5, 6, 7, 8])
    index = torch.tensor([2, 0, 0, 3])  # duplicate, reorder and drop rows at once
    with torch.no_grad():
        logits_all, _ = dec.step(prev, state, memory)
        picked_state = dec.reorder_state(state, index)
        picked_memory = select_batch(memory, index)
        logits_sel, _ = dec.step(prev[index], picked_state, picked_memory)
    torch.testing.assert_close(logits_sel, logits_all[index], atol=1e-6, rtol=0)


def test_bad_arguments_raise() -> None:
    dec = zoo.create_decoder("gru", V, C, embed_size=8, hidden_size=8)
    feats = features(2, seed=0)
    for fn in (beam_search, beam_search_reference):
        with pytest.raises(ValueError, match="beam_size"):
            fn(dec, feats, bos_id=BOS, eos_id=EOS, beam_size=0)
        with pytest.raises(ValueError, match="max_len"):
            fn(dec, feats, bos_id=BOS, eos_id=EOS, max_len=0)
        # a user error (the command line prints it without a traceback) naming the flag and the range
        with pytest.raises(ZooError, match=r"beam_size \(--beam\) must be an integer ≥ 1.*got -2"):
            fn(dec, feats, bos_id=BOS, eos_id=EOS, beam_size=-2)
        with pytest.raises(ZooError, match=r"max_len \(--max-len\) must be an integer ≥ 1.*got 0"):
            fn(dec, feats, bos_id=BOS, eos_id=EOS, max_len=0)
        with pytest.raises(ZooError, match=r"length_penalty \(--length-penalty\) must be a finite number"):
            fn(dec, feats, bos_id=BOS, eos_id=EOS, length_penalty=float("nan"))
