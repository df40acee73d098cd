"""Test helpers for plugin authors: ``zoo.testing.check_decoder(MyDecoder, **options)`` instead of a
copied test file (as pytest's ``pytester`` and timm's model tests give theirs).

``check_decoder`` builds the decoder on random ``zoo.Features`` (no encoder, no data set) and checks, in
about a second at small sizes, what the zoo relies on:

1. the decoder contract (``zoo.contracts.probe``: the shapes of ``forward``, ``keep=``, ``prepare``,
   ``init_state``, ``step``) and that its options are plain JSON values;
2. teacher-forced ``forward`` equals ``forward_stepwise`` (the same logits through ``step``), in eval mode;
3. it learns: the loss on 8 fixed captions falls to a tenth of its start within ``steps`` Adam steps
   (training stops early below 0.05; a decoder that cannot overfit eight captions has a bug);
4. save/load is bit-exact: the options through JSON and the tensors through a ``.safetensors`` file (what
   ``zoo.save``/``zoo.load`` do) rebuild a decoder with identical logits and identical beam search output;
5. beam search (beam 3) never finds a caption of lower log-probability than greedy, and the
   log-probabilities it reports equal a teacher-forced rescoring.

A failed check raises ``AssertionError`` saying which and by how much; a contract violation raises
``zoo.errors.ContractError``. In a plugin's tests::

    from zoo.testing import check_decoder
    from my_plugin import MyDecoder

    def test_my_decoder():
        check_decoder(MyDecoder, hidden_size=32, dropout=0.0)
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from zoo.contracts.decoder import Decoder
from zoo.contracts.features import Features
from zoo.contracts.probe import check_decoder_contract
from zoo.contracts.tokenizer import Tokenizer
from zoo.generation.beam import beam_search
from zoo.registry.manager import get_registry
from zoo.registry.options import check_option_values

__all__ = ["DecoderReport", "check_decoder", "features", "training_batch", "caption_loss", "rescore"]

BOS, EOS, PAD = Tokenizer.bos_id, Tokenizer.eos_id, Tokenizer.pad_id


@dataclass
class DecoderReport:
    """What ``check_decoder`` measured (for a test that wants to assert more)."""

    decoder: Decoder  # the trained decoder, in eval mode
    loss_start: float
    loss_end: float
    steps: int
    greedy_logprob: torch.Tensor  # (B,) on unseen features
    beam_logprob: torch.Tensor


def features(batch: int, feature_dim: int, grid: int = 9, seed: int = 0) -> Features:
    """Random image features, (B, grid, C) and a pooled vector related to the grid."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, grid, feature_dim, generator=g)
    return Features(x, x.mean(1) + 0.5 * torch.randn(batch, feature_dim, generator=g))


def training_batch(vocab_size: int, feature_dim: int, batch: int = 8, seed: int = 123) -> tuple[Features, torch.Tensor, list[list[int]]]:
    """``batch`` images with captions of 3..7 random words + <eos>, as ``tokenizer.batch_encode`` gives them:
    (B, 9) ``<bos> w.. <eos> <pad>..``; also the target sequences (words and <eos>)."""
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(4, vocab_size, (3 + i % 5,), generator=g).tolist() + [EOS] for i in range(batch)]
    caps = torch.full((batch, 9), PAD)
    for i, s in enumerate(seqs):
        caps[i, : len(s) + 1] = torch.tensor([BOS, *s])
    return features(batch, feature_dim, seed=7), caps, seqs


def caption_loss(decoder: Decoder, feats: Features, caps: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``caps`` as ``CaptionModel.loss`` computes it (``keep=`` for decoders that
    skip padding, the full logits indexed otherwise)."""
    target = caps[:, 1:]
    keep = target != PAD
    if decoder.skips_padding:
        logits = decoder(feats, caps[:, :-1], keep=keep)
    else:
        logits = decoder(feats, caps[:, :-1])[keep]
    return nn.functional.cross_entropy(logits.float(), target[keep])


@torch.no_grad()
def rescore(decoder: Decoder, feats: Features, seqs: list[list[int]]) -> torch.Tensor:
    """Total log-probability of each sequence (words and <eos>), recomputed by teacher forcing."""
    L = max(len(s) for s in seqs)
    inp = torch.full((len(seqs), L), PAD)
    tgt = torch.full((len(seqs), L), PAD)
    for i, s in enumerate(seqs):
        inp[i, : len(s)] = torch.tensor([BOS, *s[:-1]])
        tgt[i, : len(s)] = torch.tensor(s)
    logp = torch.log_softmax(decoder(feats, inp).float(), dim=-1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    return (logp * (tgt != PAD)).sum(1)


def check_decoder(
    decoder: type[Decoder] | Callable[..., Decoder] | str,
    *,
    vocab_size: int = 30,
    feature_dim: int = 16,
    steps: int = 400,
    lr: float = 1e-2,
    seed: int = 0,
    **options: Any,
) -> DecoderReport:
    """Check a decoder class (or registered name) end to end; see the module docstring. ``options`` go to
    its constructor; keep them small (``hidden_size=32``) and dropout at 0 so it overfits quickly."""
    label = _label(decoder)
    factory = _factory(decoder)
    check_option_values("decoder", label, "under test", options)
    build = lambda: factory(vocab_size=vocab_size, feature_dim=feature_dim, **json.loads(json.dumps(options)))  # noqa: E731
    torch.manual_seed(seed)
    dec = build()
    check_decoder_contract(dec, label)

    dec.eval()  # 2. the fused forward is the stepwise one
    feats = features(4, feature_dim, seed=1)
    tokens = torch.randint(4, vocab_size, (4, 9), generator=torch.Generator().manual_seed(2))
    tokens[:, 0] = BOS
    with torch.no_grad():
        fused, stepwise = dec(feats, tokens), dec.forward_stepwise(feats, tokens)
    gap = float((fused - stepwise).abs().max())
    assert gap <= 1e-4, f"{label}: forward and forward_stepwise differ by {gap:.2e} (more than 1e-4)"

    dec.train()  # 3. it learns
    feats, caps, seqs = training_batch(vocab_size, feature_dim)
    opt = torch.optim.Adam(dec.parameters(), lr=lr)
    with torch.no_grad():
        start = last = float(caption_loss(dec, feats, caps))
    done = 0
    for done in range(1, steps + 1):
        loss = caption_loss(dec, feats, caps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        last = float(loss.detach())
        if last < 0.05:  # well past the bar below: greedy decoding now gives the training captions back
            break
    assert last < 0.1 * start, (
        f"{label}: the loss on 8 fixed captions fell only from {start:.3f} to {last:.3f} in {done} Adam steps "
        f"(lr {lr}); a decoder that cannot overfit a batch has a bug (or needs more steps=, another lr=)"
    )
    dec.eval()

    unseen = features(32, feature_dim, seed=11)  # 5. beam search >= greedy
    kw = dict(bos_id=BOS, eos_id=EOS, max_len=10, length_penalty=0.0)
    greedy = beam_search(dec, unseen, beam_size=1, **kw)
    beam = beam_search(dec, unseen, beam_size=3, **kw)
    g_lp = rescore(dec, unseen, [h.tokens for h in greedy])
    b_lp = rescore(dec, unseen, [h.tokens for h in beam])
    for name, hyps, lp in (("greedy", greedy, g_lp), ("beam 3", beam, b_lp)):
        reported = torch.tensor([h.logprob for h in hyps])
        assert torch.allclose(lp, reported, atol=1e-3), (
            f"{label}: {name} reports log-probabilities {reported.tolist()} but teacher forcing gives "
            f"{lp.tolist()}: step and forward disagree"
        )
    worse = (b_lp < g_lp - 1e-4).nonzero().flatten().tolist()
    assert not worse, f"{label}: beam 3 found captions less probable than greedy for images {worse}"

    _check_save_load(dec, build, unseen, label, kw)  # 4. bit-exact reload
    return DecoderReport(dec, start, last, done, g_lp, b_lp)


def _label(decoder: Any) -> str:
    """The decoder as errors name it: its registered name and plugin when it is registered (by name, or the
    class a plugin registered), else its module and class."""
    reg = get_registry()
    if isinstance(decoder, str):
        entry = reg.get("decoder", decoder)
    else:
        entry = next((reg.get("decoder", n) for n in reg.names("decoder") if reg.get("decoder", n).factory is decoder),
                     None)
    where = f"{getattr(decoder, '__module__', '?')}.{getattr(decoder, '__qualname__', repr(decoder))}"
    if entry is None:
        return where
    if isinstance(entry.factory, type):
        where = f"{entry.factory.__module__}.{entry.factory.__qualname__}"
    return f"{entry.name!r} (plugin {entry.plugin!r}, {where})"


def _factory(decoder: Any) -> Callable[..., Decoder]:
    if isinstance(decoder, str):
        return get_registry().get("decoder", decoder).factory
    return decoder


def _check_save_load(dec: Decoder, build: Callable[[], Decoder], feats: Features, label: str, kw: dict) -> None:
    """As ``zoo.save``/``zoo.load``: a fresh decoder from the JSON options, the tensors from a file."""

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "decoder.safetensors")
        save_model(dec, path)
        torch.manual_seed(12345)  # a different initialisation: every weight must come from the file
        again = build()
        missing, unexpected = load_model(again, path, strict=False)
    assert not missing and not unexpected, f"{label}: reloaded state has missing {missing} / unexpected {unexpected}"
    again.eval()
    tokens = torch.randint(4, dec.vocab_size, (feats.batch_size, 7), generator=torch.Generator().manual_seed(3))
    tokens[:, 0] = BOS
    with torch.no_grad():
        same = torch.equal(dec(feats, tokens), again(feats, tokens))
    assert same, f"{label}: a decoder rebuilt from its options and saved tensors gives other logits (state outside parameters/buffers?)"
    a = [h.tokens for h in beam_search(dec, feats, beam_size=3, **kw)]
    b = [h.tokens for h in beam_search(again, feats, beam_size=3, **kw)]
    assert a == b, f"{label}: the reloaded decoder's beam search differs"
