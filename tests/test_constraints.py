"""Decoding constraints (``zoo.generation.constraints``), shared by beam search and sampling: they really block
(no repeated n-gram, no bad ending, the minimum length, no <unk>), the vectorised rules equal the plain
per-caption reference, the batched beam search still equals its reference with constraints, and beam
search still finds at least the greedy log-probability."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.generation.constraints import BAD_ENDING_WORDS, Constraints, ends_badly
from zoo.errors import ZooError
from zoo.generation.sampling import sample
from zoo.generation.beam import beam_search, beam_search_reference
from tests.helpers import CAPTIONS, TableDecoder
from tests.test_beam_search import (  # noqa: F401 (one_thread: the module's autouse fixture)
    BOS, EOS, MAX_LEN, NAMES, features, one_thread, partially_trained,
)

UNK = zoo.Tokenizer.unk_id
THE = 7  # the token the hand-made decoder likes to end on


class Loopy(TableDecoder):
    """A bigram decoder with every failure the constraints exist for: it starts with <unk>, then loops
    5 6 5 6 ..., and when it ends it ends right after THE (or after one word, too short)."""

    def __init__(self) -> None:
        t = torch.full((10, 10), -4.0)
        t[BOS, UNK], t[BOS, 5] = 3.0, 2.0
        t[UNK, 5], t[UNK, EOS] = 3.0, 2.5
        t[5, 6], t[5, THE], t[5, EOS] = 3.0, 1.0, 0.5
        t[6, 5], t[6, THE], t[6, 8] = 3.0, 2.0, 1.0
        t[THE, EOS], t[THE, 9] = 4.0, 1.0
        t[8, EOS], t[9, EOS] = 2.0, 2.0
        t[8, 5], t[9, 6] = 1.0, 1.0
        super().__init__(t)


ALL = Constraints(min_len=4, no_repeat_ngram=3, suppress_unk=True, bad_ending_sequences=((THE,), (8, 9)))


def violations(seq: list[int], c: Constraints) -> list[str]:
    words = seq[:-1] if seq and seq[-1] == EOS else seq
    found = []
    grams = [tuple(words[i : i + c.no_repeat_ngram]) for i in range(len(words) - c.no_repeat_ngram + 1)]
    if c.no_repeat_ngram and len(grams) != len(set(grams)):
        found.append("repeated n-gram")
    if c.suppress_unk and UNK in words:
        found.append("<unk>")
    if seq and seq[-1] == EOS:
        if len(words) < c.min_len:
            found.append("too short")
        if any(tuple(words[-len(s):]) == s for s in c.bad_ending_sequences):
            found.append("bad ending")
    return found


def decode_all(dec: zoo.Decoder, c: Constraints | None, n: int = 200) -> list[list[int]]:
    feats = features(2, seed=0)
    kw = dict(bos_id=BOS, eos_id=EOS, max_len=10, constraints=c)
    out = [h.tokens for beam in (1, 3) for h in beam_search(dec, feats, beam_size=beam, **kw)]
    s = sample(dec, feats, n=n, generator=torch.Generator().manual_seed(0), **kw)
    out += [s.tokens[r, : s.lengths[r]].tolist() for r in range(s.tokens.shape[0])]
    return out


def test_constraints_really_block_in_beam_search_and_sampling() -> None:
    dec = Loopy()
    free = [violations(seq, ALL) for seq in decode_all(dec, None)]
    for what in ("repeated n-gram", "<unk>", "too short", "bad ending"):
        assert any(what in v for v in free), f"the decoder never shows {what}: the test has no power"
    constrained = decode_all(dec, ALL)
    assert all(violations(seq, ALL) == [] for seq in constrained), [
        (seq, violations(seq, ALL)) for seq in constrained if violations(seq, ALL)
    ][:3]
    assert any(seq[-1] == EOS for seq in constrained)


@pytest.mark.parametrize("option", ["min_len", "no_repeat_ngram", "suppress_unk", "bad_endings"])
def test_each_constraint_alone_blocks_its_failure(option: str) -> None:
    c = {
        "min_len": Constraints(min_len=4),
        "no_repeat_ngram": Constraints(no_repeat_ngram=3),
        "suppress_unk": Constraints(suppress_unk=True),
        "bad_endings": Constraints(bad_ending_sequences=((THE,), (8, 9))),
    }[option]
    for seq in decode_all(Loopy(), c, n=100):
        assert violations(seq, c) == [], (option, seq)


def test_vectorised_rules_equal_the_plain_reference() -> None:
    g = torch.Generator().manual_seed(0)
    settings = [
        ALL,
        Constraints(no_repeat_ngram=1),
        Constraints(no_repeat_ngram=2, bad_ending_sequences=((4,), (5, 6), (6, 5, 4))),
        Constraints(min_len=3, suppress_unk=True),
    ]
    for c in settings:
        for t in range(0, 9):
            history = torch.randint(4, 10, (64, t), generator=g)
            logp = torch.log_softmax(torch.randn(64, 10, generator=g), dim=-1)
            got = c.apply(logp, history, EOS)
            for r in range(64):
                ref = c.apply_reference(logp[r], history[r].tolist(), EOS)
                assert torch.equal(got[r], ref), (c, history[r].tolist())


def test_a_row_with_every_token_forbidden_may_still_end() -> None:
    c = Constraints(no_repeat_ngram=1)
    history = torch.tensor([[4, 5, 6, 7, 8, 9, 0, 1, 3]])  # every non-eos token used once already
    logp = torch.log_softmax(torch.randn(1, 10), dim=-1)
    out = c.apply(logp, history, EOS)
    assert out[0, EOS] == logp[0, EOS] and torch.isneginf(out[0, [i for i in range(10) if i != EOS]]).all()


@pytest.fixture(scope="module")
def decoders() -> dict[str, zoo.Decoder]:
    return {name: partially_trained(name) for name in NAMES}


ON_TRAINED = Constraints(min_len=3, no_repeat_ngram=2, suppress_unk=True, bad_ending_sequences=((5,), (9,), (6, 7)))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("beam", [1, 3])
def test_batched_equals_reference_with_constraints(decoders: dict, name: str, beam: int) -> None:
    feats = features(7, seed=9)
    kw = dict(bos_id=BOS, eos_id=EOS, beam_size=beam, max_len=MAX_LEN, length_penalty=1.0, constraints=ON_TRAINED)
    got, ref = beam_search(decoders[name], feats, **kw), beam_search_reference(decoders[name], feats, **kw)
    assert [h.tokens for h in got] == [h.tokens for h in ref]
    for g, r in zip(got, ref):
        assert g.logprob == pytest.approx(r.logprob, abs=1e-5)
    unconstrained = beam_search(decoders[name], feats, **{**kw, "constraints": None})
    assert [h.tokens for h in got] != [h.tokens for h in unconstrained]  # they had something to block


@pytest.mark.parametrize("name", NAMES)
def test_constrained_sampling_top_k_one_is_constrained_greedy(decoders: dict, name: str) -> None:
    feats = features(6, seed=4)
    kw = dict(bos_id=BOS, eos_id=EOS, max_len=MAX_LEN, constraints=ON_TRAINED)
    greedy = beam_search(decoders[name], feats, beam_size=1, **kw)
    s = sample(decoders[name], feats, top_k=1, **kw)
    assert [s.tokens[i, : s.lengths[i]].tolist() for i in range(6)] == [h.tokens for h in greedy]


@pytest.mark.parametrize("name", NAMES)
def test_constrained_beam_finds_at_least_the_constrained_greedy_logprob(decoders: dict, name: str) -> None:
    feats = features(16, seed=11)
    kw = dict(bos_id=BOS, eos_id=EOS, max_len=10, length_penalty=0.0, constraints=ON_TRAINED)
    greedy = beam_search(decoders[name], feats, beam_size=1, **kw)
    beam = beam_search(decoders[name], feats, beam_size=3, **kw)
    assert all(b.logprob >= g.logprob - 1e-5 for b, g in zip(beam, greedy))


def test_bad_endings_resolve_through_word_and_sentencepiece_vocabularies() -> None:
    caps = CAPTIONS * 4 + ["a man riding a horse with the dog", "the cat sat on the mat in the house of an owner"]
    for tok in (zoo.create_tokenizer("word", caps, min_count=0),
                zoo.create_tokenizer("sentencepiece", caps, vocab_size=60)):
        c = Constraints.for_tokenizer(tok, bad_endings=True)
        assert c is not None
        for text, bad in (("a man riding a horse with the", True), ("a cat sat on", True),
                          ("a man with an", True), ("a man riding a horse", False), ("the cat", False)):
            history = torch.tensor([tok.encode(text)])
            logp = torch.zeros(1, tok.vocab_size)
            blocked = bool(torch.isneginf(c.apply(logp, history, tok.eos_id)[0, tok.eos_id]))
            assert blocked == bad, (type(tok).__name__, text)
    assert Constraints.for_tokenizer(tok) is None  # nothing set: the searches skip the step


def test_ends_badly_reads_the_last_word() -> None:
    assert ends_badly("A man riding a horse with the.") and ends_badly("two dogs on")
    assert not ends_badly("a man riding a horse") and not ends_badly("")
    assert {"a", "an", "the", "of", "in", "on", "with", "to"} <= set(BAD_ENDING_WORDS)


def test_bad_constraint_values_are_refused_with_the_flag() -> None:
    with pytest.raises(ZooError, match=r"min_len \(--min-len\) must be an integer ≥ 0"):
        Constraints(min_len=-1)
    with pytest.raises(ZooError, match=r"no_repeat_ngram \(--no-repeat-ngram\) must be an integer ≥ 0"):
        Constraints(no_repeat_ngram=1.5)
    with pytest.raises(ZooError, match=r"min_len \(--min-len\) must be smaller than max_len \(--max-len 5\)"):
        beam_search(Loopy(), features(1, 0), bos_id=BOS, eos_id=EOS, max_len=5, constraints=Constraints(min_len=5))
