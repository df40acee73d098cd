"""The four built-in decoders through the public contract: created by name from the registry, fed random
``zoo.Features`` directly (no encoder), tiny sizes so the whole file runs in seconds."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import zoo
import zoo.testing
from zoo.generation.beam import beam_search

NAMES = ["gru", "gru-stacked", "gru-attn", "lstm"]
V, C, N = 30, 16, 9  # vocab, feature dim, grid positions
BOS, EOS, PAD = zoo.Tokenizer.bos_id, zoo.Tokenizer.eos_id, zoo.Tokenizer.pad_id
TINY = {"embed_size": 16, "hidden_size": 32, "dropout": 0.0}
EXTRA = {"gru-attn": {"attention_size": 16}}


def tiny_opts(name: str, **over: object) -> dict:
    return {**TINY, **EXTRA.get(name, {}), **over}


def features(batch: int, seed: int = 0) -> zoo.Features:
    g = torch.Generator().manual_seed(seed)
    grid = torch.randn(batch, N, C, generator=g)
    return zoo.Features(grid, grid.mean(1) + 0.5 * torch.randn(batch, C, generator=g))


def make(name: str, seed: int = 0, **over: object) -> zoo.Decoder:
    torch.manual_seed(seed)
    return zoo.create_decoder(name, V, C, **tiny_opts(name, **over))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second thread only adds contention on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- shapes and the fused/stepwise equivalence -------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_batch_first_state(name: str) -> None:
    dec = make(name).eval()
    feats, tokens = features(5), torch.randint(0, V, (5, 7))
    assert dec(feats, tokens).shape == (5, 7, V)
    memory = dec.prepare(feats)
    state = dec.init_state(memory)
    for t in state if isinstance(state, tuple) else (state,):
        assert t.shape[0] == 5  # batch first, so the generic select_batch can reorder it
    logits, state2 = dec.step(torch.full((5,), BOS), state, memory)
    assert logits.shape == (5, V)
    assert type(state2) is type(state)


@pytest.mark.parametrize(
    "name,over",
    [(n, {}) for n in NAMES]
    + [
        ("gru-stacked", {"num_layers": 3}),
        ("gru-attn", {"gate": False}),
        ("lstm", {"num_layers": 2}),
        ("gru", {"tie_weights": True}),
        ("gru-attn", {"tie_weights": True, "embed_size": 32}),
        ("gru-attn", {"norm_features": False}),
        ("lstm", {"norm_features": False}),
    ],
)
def test_fused_forward_equals_stepwise(name: str, over: dict) -> None:
    dec = make(name, dropout=0.3, **over).eval()  # dropout off in eval mode
    feats, tokens = features(4, seed=1), torch.randint(0, V, (4, 9))
    fused = dec(feats, tokens)
    stepwise = dec.forward_stepwise(feats, tokens)
    torch.testing.assert_close(fused, stepwise, atol=1e-5, rtol=0)


def ragged_tokens(batch: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input tokens (B, T) and the ``keep`` mask of their scored positions: rows of different lengths,
    padding after, as ``CaptionModel.loss`` builds them."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (batch,), generator=g)
    lengths[0] = width
    keep = torch.arange(width)[None, :] < lengths[:, None]
    tokens = torch.where(keep, torch.randint(4, V, (batch, width), generator=g), PAD)
    tokens[:, 0] = BOS
    return tokens, keep


@pytest.mark.parametrize("name,packed", [(n, True) for n in NAMES] + [("lstm", False)])
def test_skipping_padding_gives_the_same_logits_and_gradients(name: str, packed: bool, monkeypatch) -> None:
    """``forward(..., keep=mask)`` computes the output layer (and, in gru-attn, the steps) only where a
    word is scored; logits and every parameter's gradient must equal the full forward's, masked. The
    packed recurrence is checked for lstm too, though on a CPU it runs unpacked (``packing_pays``)."""
    from zoo_plugins.decoders import _rnn

    monkeypatch.setattr(_rnn, "packing_pays", lambda rnn, x: packed)
    dec = make(name).train()  # dropout 0, batch statistics in the feature norm: the training path
    assert dec.skips_padding
    feats, (tokens, keep) = features(7, seed=3), ragged_tokens(7, 8, seed=4)
    target = torch.randint(0, V, (int(keep.sum()),))

    def grads(logits: torch.Tensor) -> dict[str, torch.Tensor]:
        dec.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(logits, target).backward()
        return {k: p.grad.clone() for k, p in dec.named_parameters() if p.grad is not None}

    full = dec(feats, tokens)[keep]
    kept = dec(feats, tokens, keep=keep)
    assert kept.shape == (int(keep.sum()), V)
    torch.testing.assert_close(kept, full, atol=1e-5, rtol=0)
    g_full, g_kept = grads(dec(feats, tokens)[keep]), grads(dec(feats, tokens, keep=keep))
    assert g_full.keys() == g_kept.keys()
    for k in g_full:
        torch.testing.assert_close(g_kept[k], g_full[k], atol=1e-5, rtol=1e-4, msg=k)


@pytest.mark.parametrize("name", NAMES)
def test_keep_that_is_not_a_prefix_still_gives_the_masked_logits(name: str) -> None:
    dec = make(name).eval()
    feats, tokens = features(4, seed=5), torch.randint(4, V, (4, 6))
    keep = torch.rand(4, 6, generator=torch.Generator().manual_seed(6)) < 0.5
    keep[:, 0] = True
    keep[1, 1] = False  # a hole, not a prefix
    keep[1, 2] = True
    torch.testing.assert_close(dec(feats, tokens, keep=keep), dec(feats, tokens)[keep], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["gru", "gru-attn"])
def test_model_loss_skipping_padding_equals_masked_cross_entropy(name: str) -> None:
    """The training loss leaves padding out before the output layer; it must equal the textbook
    cross-entropy over all positions with ``ignore_index=pad`` (label smoothing included)."""
    from zoo.models.caption_model import CaptionModel

    dec = make(name)
    model = CaptionModel(nn.Identity(), dec, zoo.create_tokenizer("word", ["a b c"], min_count=0), {})  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(9)
    caps = torch.full((6, 9), PAD)  # <bos> w.. <eos> pad..
    for i, n in enumerate([7, 0, 3, 5, 1, 7]):
        caps[i, : n + 2] = torch.tensor([BOS, *torch.randint(4, V, (n,), generator=g).tolist(), EOS])
    feats = features(6, seed=8)
    for smoothing in (0.0, 0.1):
        logits = dec(feats, caps[:, :-1])
        want = nn.functional.cross_entropy(
            logits.reshape(-1, V), caps[:, 1:].reshape(-1), ignore_index=PAD, label_smoothing=smoothing
        )
        torch.testing.assert_close(model.loss(feats, caps, smoothing), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["gru", "gru-stacked", "lstm"])
def test_forward_is_one_fused_rnn_call(name: str) -> None:
    """Teacher forcing must run the recurrent module once over the whole sequence, not per step."""
    dec = make(name).eval()
    calls: list[tuple[int, ...]] = []
    rnn = next(m for m in dec.modules() if isinstance(m, (nn.GRU, nn.LSTM)))
    rnn.register_forward_hook(lambda mod, inp, out: calls.append(tuple(inp[0].shape)))
    dec(features(3), torch.randint(0, V, (3, 6)))
    assert len(calls) == 1 and calls[0][1] >= 6


@pytest.mark.parametrize("name", ["gru", "gru-stacked"])
def test_training_path_runs_the_recurrence_over_words_only(name: str) -> None:
    """With ``keep``, still one call, but packed: each row stops at its last word, no step on padding.
    (Not ``lstm`` on a CPU: torch's oneDNN LSTM kernel, faster there, takes only unpacked input.)"""
    dec = make(name).train()
    inputs: list[object] = []
    rnn = next(m for m in dec.modules() if isinstance(m, (nn.GRU, nn.LSTM)))
    rnn.register_forward_hook(lambda mod, inp, out: inputs.append(inp[0]))
    tokens, keep = ragged_tokens(6, 7, seed=2)
    dec(features(6), tokens, keep=keep)
    assert len(inputs) == 1 and isinstance(inputs[0], nn.utils.rnn.PackedSequence)
    assert inputs[0].data.shape[0] == int(keep.sum()) < keep.numel()


def test_attention_projection_is_computed_once_per_batch() -> None:
    dec = make("gru-attn").eval()
    calls = []
    dec.att_grid.register_forward_hook(lambda *a: calls.append(1))
    dec(features(3), torch.randint(0, V, (3, 6)))
    assert len(calls) == 1
    beam_search(dec, features(3), bos_id=BOS, eos_id=EOS, beam_size=2, max_len=5)
    assert len(calls) == 2


def test_attention_weights_follow_the_additive_formula() -> None:
    """gru-attn computes its energies through a sigmoid (faster); the weights must still be the textbook
    softmax_i(vᵀ tanh(W_g g_i + W_h h + b))."""
    dec = make("gru-attn").eval()
    memory = dec.prepare(features(3))
    h = torch.randn(3, 32)
    context, alpha = dec.attend(h, memory)
    energy = dec.att_score(torch.tanh(dec.att_grid(memory.grid) + dec.att_hidden(h).unsqueeze(1))).squeeze(-1)
    torch.testing.assert_close(alpha, torch.softmax(energy, dim=-1), atol=1e-6, rtol=0)
    gate = torch.sigmoid(dec.gate_proj(h))
    torch.testing.assert_close(context, gate * (alpha.unsqueeze(-1) * memory.grid).sum(1), atol=1e-5, rtol=0)


# -- learning: overfit a fixed batch, then decode it back -------------------------------------------------
def training_batch() -> tuple[zoo.Features, torch.Tensor, list[list[int]]]:
    return zoo.testing.training_batch(V, C)


@pytest.fixture(scope="module")
def trained() -> dict[str, zoo.testing.DecoderReport]:
    """Every built-in through ``zoo.testing.check_decoder``, the check a plugin author runs on theirs:
    the contract probe, fused forward = stepwise, overfitting 8 captions, bit-exact reload, beam ≥ greedy."""
    return {name: zoo.testing.check_decoder(name, vocab_size=V, feature_dim=C, seed=3, **tiny_opts(name)) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_overfits_small_batch(trained: dict, name: str) -> None:
    report = trained[name]
    assert report.loss_end < 0.1 * report.loss_start, f"{name}: loss {report.loss_start:.3f} -> {report.loss_end:.3f}"


@pytest.mark.parametrize("name", NAMES)
def test_greedy_reproduces_training_captions(trained: dict, name: str) -> None:
    dec = trained[name].decoder
    feats, _, seqs = training_batch()
    hyps = beam_search(dec, feats, bos_id=BOS, eos_id=EOS, beam_size=1, max_len=12, length_penalty=0.0)
    assert [h.tokens for h in hyps] == seqs


@pytest.mark.parametrize("name", NAMES)
def test_beam_beats_greedy_somewhere(trained: dict, name: str) -> None:
    """check_decoder asserts beam 3 never scores below greedy (not a theorem, but on a trained decoder a
    search that stops too early or finishes the wrong candidates shows up at once); here: the images it
    was checked on give that assertion power."""
    report = trained[name]
    assert bool((report.beam_logprob > report.greedy_logprob + 1e-3).any()), "beam 3 never beat greedy: no power"


# -- options ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_tie_weights_shares_storage(name: str) -> None:
    dec = make(name, tie_weights=True)  # embed 16 ≠ hidden 32: needs the projection
    assert dec.head.linear.weight is dec.embed.weight
    assert isinstance(dec.head.proj, nn.Linear)
    opt = torch.optim.SGD(dec.parameters(), lr=0.1)
    feats, tokens = features(2), torch.randint(0, V, (2, 4))
    dec(feats, tokens).sum().backward()
    opt.step()
    assert dec.head.linear.weight.data_ptr() == dec.embed.weight.data_ptr()
    state = dec.state_dict()
    out_key = next(k for k in state if k.startswith("head.linear.weight"))
    assert state[out_key].data_ptr() == state["embed.weight"].data_ptr()
    untied = make(name)
    assert untied.head.linear.weight is not untied.embed.weight
    same = make(name, tie_weights=True, embed_size=32)
    assert isinstance(same.head.proj, nn.Identity)


BAD_VALUES = [
    ("hidden_size", 0),
    ("embed_size", -3),
    ("embed_size", 2.5),
    ("dropout", 1.5),
    ("tie_weights", "yes"),
    ("norm_features", 1),
]
BAD_OPTIONS = [(n, opt, val) for n in NAMES for opt, val in BAD_VALUES] + [
    ("gru-stacked", "num_layers", 1),
    ("lstm", "num_layers", 0),
    ("gru-attn", "attention_size", 0),
    ("gru-attn", "gate", "no"),
]


@pytest.mark.parametrize("name,option,value", BAD_OPTIONS)
def test_bad_option_value_names_the_option(name: str, option: str, value: object) -> None:
    with pytest.raises((zoo.ZooError, ValueError)) as info:
        zoo.create_decoder(name, V, C, **{**tiny_opts(name), option: value})
    assert option in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_lists_the_valid_ones(name: str) -> None:
    with pytest.raises(zoo.ZooError, match="hidden_size"):
        zoo.create_decoder(name, V, C, hiden_size=64)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_feature_dim_is_a_clear_error(name: str) -> None:
    dec = make(name)
    wrong = zoo.Features(torch.randn(2, N, C + 1), torch.randn(2, C + 1))
    with pytest.raises(zoo.ZooError, match="feature_dim"):
        dec(wrong, torch.randint(0, V, (2, 3)))


@pytest.mark.parametrize("name", NAMES)
def test_feature_norm_lets_small_image_differences_through(name: str) -> None:
    """Features with a large shared offset and 1% image-specific spread (what a frozen encoder can give):
    with ``norm_features`` the initial states differ clearly between images, without it they barely do."""
    g = torch.Generator().manual_seed(0)
    offset = 3.0 * torch.randn(1, 1, C, generator=g)
    grid = offset + 0.01 * torch.randn(16, N, C, generator=g)
    feats = zoo.Features(grid, grid.mean(1))

    def spread(dec: zoo.Decoder) -> float:
        dec.train()
        dec(feats, torch.randint(0, V, (16, 3)))  # batch statistics (and running averages) from this batch
        state = dec.init_state(dec.prepare(feats))
        h = state[0] if isinstance(state, tuple) else state
        return h.std(0).mean().item()

    assert spread(make(name)) > 20 * spread(make(name, norm_features=False))


@pytest.mark.parametrize("name", NAMES)
def test_train_mode_accepts_a_batch_of_one(name: str) -> None:
    dec = make(name).train()  # one row has no spread: the feature norm falls back to running averages
    assert dec(features(1), torch.randint(0, V, (1, 4))).shape == (1, 4, V)


COMMON = {"embed_size", "hidden_size", "dropout", "tie_weights", "norm_features"}
EXPECTED_OPTIONS = {
    "gru": COMMON,
    "gru-stacked": COMMON | {"num_layers"},
    "gru-attn": COMMON | {"attention_size", "gate"},
    "lstm": COMMON | {"num_layers"},
}


@pytest.mark.parametrize("name", NAMES)
def test_registry_lists_options_with_json_defaults(name: str) -> None:
    entry = zoo.get_registry().get("decoder", name)
    opts = {k: v for k, v in entry.options().items() if k not in ("vocab_size", "feature_dim")}
    assert set(opts) == EXPECTED_OPTIONS[name]
    json.dumps(opts)  # defaults are plain JSON values (stored in checkpoints)
    assert entry.doc and entry.module == f"zoo_plugins.decoders.{name.replace('-', '_')}"
    if name == "gru-stacked":
        assert opts["num_layers"] >= 2


def test_zoo_info_shows_gru_attn_options(capsys: pytest.CaptureFixture) -> None:
    from zoo.cli import main

    assert main(["info", "gru-attn", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "decoder"
    assert {"attention_size", "gate", "tie_weights"} <= set(info["options"])
