"""A plugin's mistakes are caught where they are made: the decoder contract is probed when a decoder is
built (shapes of forward, prepare, init_state, step), options are plain JSON at registration and at
construction, and a --plugin whose own import fails says which dependency is missing."""

from __future__ import annotations

import random
import re
import textwrap

import numpy as np
import pytest
import torch

import zoo
from zoo.errors import ContractError, PluginLoadError
from zoo.generation.sampling import sample
from zoo.generation.beam import beam_search

V, C = 30, 16

PLUGIN = '''
"""A tiny GRU-cell decoder whose option ``bad`` picks one contract mistake (tests only)."""
import random

import numpy as np
import torch
from torch import nn

import zoo


class Tiny(zoo.Decoder):
    def __init__(self, vocab_size, feature_dim, hidden_size=8, bad="", noisy=False, activation="tanh"):
        super().__init__(vocab_size, feature_dim)
        self.bad, self.noisy = bad, noisy
        if bad == "init-raises":
            raise ValueError("cannot build with these sizes")
        if bad == "keep-ignored":
            self.skips_padding = True
        self.act = torch.tanh if activation == "tanh" else activation
        self.embed = nn.Embedding(vocab_size, hidden_size)
        self.init = nn.Linear(feature_dim, hidden_size)
        self.cell = nn.GRUCell(hidden_size, hidden_size)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(hidden_size, vocab_size)

    def forward(self, features, tokens, keep=None):
        h = self.act(self.init(features.pooled))
        outs = []
        for t in range(tokens.shape[1]):
            logits, h = self.step(tokens[:, t], h, features, check=False)
            outs.append(logits)
        logits = torch.stack(outs, 1)
        if self.bad == "forward-flat":
            return logits.reshape(-1, logits.shape[-1])
        if self.bad == "forward-time-first":
            return logits.transpose(0, 1)
        return logits

    def prepare(self, features):
        return features.grid.transpose(0, 1) if self.bad == "prepare-transposed" else features

    def init_state(self, memory):
        pooled = memory.pooled if isinstance(memory, zoo.Features) else memory.mean(0)
        h = self.act(self.init(pooled))
        if self.noisy:  # draws from every global RNG, as a careless plugin might
            h = h + 0 * torch.randn_like(h) + 0 * random.random() + 0 * float(np.random.rand())
        return h.unsqueeze(0) if self.bad == "state-layers-first" else h

    def step(self, prev_tokens, state, memory, check=True):
        if self.bad.startswith("step-max") and prev_tokens.shape[0] > int(self.bad[8:]):
            raise RuntimeError(f"my buffer holds {self.bad[8:]} rows")  # a fixed-size buffer
        h = self.cell(self.drop(self.embed(prev_tokens)), state)
        logits = self.out(h)
        if check:
            B = logits.shape[0]
            if self.bad == "step-b1v":
                logits = logits.unsqueeze(1)
            elif self.bad == "step-v-1":
                logits = logits[:, :-1]
            elif self.bad == "step-v+5":
                logits = torch.cat([logits, logits.new_zeros(B, 5)], 1)
            elif self.bad == "step-vb":
                logits = logits.t()
            elif self.bad.startswith("step-short-above") and B > int(self.bad[16:]):
                logits = logits[:-1]  # a row lost, only on batches larger than the probe's
        return logits, h


class TinyAttn(Tiny):
    """Tiny with attention over the grid; ``scale`` multiplies the weights (1: a distribution)."""

    attends = True

    def __init__(self, vocab_size, feature_dim, hidden_size=8, scale=1.0, train_fails=False):
        super().__init__(vocab_size, feature_dim, hidden_size)
        self.scale, self.train_fails = scale, train_fails
        self.key = nn.Linear(feature_dim, hidden_size)

    def forward(self, features, tokens, keep=None):
        if self.train_fails and self.training:
            raise RuntimeError("my training path is broken")
        return self.forward_stepwise(features, tokens)

    def step(self, prev_tokens, state, memory, check=True):
        h, _ = state
        alpha = torch.softmax((self.key(memory.grid) * h.unsqueeze(1)).sum(-1), dim=-1) * self.scale
        h = self.cell(self.embed(prev_tokens) + (alpha.unsqueeze(-1) * self.key(memory.grid)).sum(1), h)
        return self.out(h), (h, alpha)

    def init_state(self, memory):
        h = torch.tanh(self.init(memory.pooled))
        return h, h.new_full((h.shape[0], memory.grid.shape[1]), 1.0 / memory.grid.shape[1])

    def last_attention(self, state):
        return state[1]


class Broken(Tiny):
    def __init__(self, vocab_size, feature_dim, hidden_size=8):
        super().__init__(vocab_size, feature_dim, hidden_size, bad="step-b1v")


@zoo.hookimpl
def zoo_register(registry):
    registry.add_decoder("tiny-test", Tiny)
    registry.add_decoder("tiny-broken", Broken)
    registry.add_decoder("tiny-attn", TinyAttn)
'''


@pytest.fixture
def plugin(fresh_registry, tmp_path):
    path = tmp_path / "tiny_test_plugin.py"
    path.write_text(PLUGIN)
    return zoo.load_plugin(str(path), name="tiny-test-plugin")


def features(batch: int) -> zoo.Features:
    g = torch.Generator().manual_seed(0)
    grid = torch.randn(batch, 5, C, generator=g)
    return zoo.Features(grid, grid.mean(1))


@pytest.mark.parametrize("bad, method, got, expected", [
    ("step-b1v", "step(prev_tokens, state, memory)", f"(3, 1, {V})", f"(3, {V})"),
    ("step-v-1", "step(prev_tokens, state, memory)", f"(3, {V - 1})", f"(3, {V})"),
    ("step-v+5", "step(prev_tokens, state, memory)", f"(3, {V + 5})", f"(3, {V})"),
    ("step-vb", "step(prev_tokens, state, memory)", f"({V}, 3)", f"(3, {V})"),
    ("forward-flat", "forward(features, tokens)", f"(12, {V})", f"(3, 4, {V})"),
    ("forward-time-first", "forward(features, tokens)", f"(4, 3, {V})", f"(3, 4, {V})"),
    ("keep-ignored", "forward(features, tokens, keep=mask)", f"(3, 4, {V})", f"(9, {V})"),
    ("prepare-transposed", "prepare(features)", f"(5, 3, {C})", "batch (3) first"),
    ("state-layers-first", "init_state(memory)", "(1, 3, 8)", "batch (3) first"),
])
def test_a_contract_violation_is_named_when_the_decoder_is_built(plugin, bad, method, got, expected):
    with pytest.raises(ContractError) as info:
        zoo.create_decoder("tiny-test", V, C, bad=bad)
    msg = str(info.value)
    assert "'tiny-test'" in msg and "plugin 'tiny-test-plugin'" in msg and method in msg, msg
    assert f"shape {got}" in msg and expected in msg, msg


def test_a_good_decoder_passes_and_the_probe_changes_no_rng_and_no_mode(plugin):
    def seeded_draws(build):
        torch.manual_seed(0), random.seed(0), np.random.seed(0)
        dec = build()
        return dec, (torch.rand(3).tolist(), random.random(), float(np.random.rand()))

    probed, with_probe = seeded_draws(lambda: zoo.create_decoder("tiny-test", V, C, noisy=True))
    _, without = seeded_draws(lambda: plugin.Tiny(V, C, noisy=True))  # built by hand: no probe
    assert with_probe == without  # torch, numpy and Python streams all where they were
    assert all(m.training for m in probed.modules())  # back in training mode, every submodule


@pytest.mark.parametrize("bad", ["step-b1v", "step-v-1", "step-v+5", "step-vb"])
def test_decoding_never_turns_a_violation_into_an_index_error(plugin, bad):
    dec = plugin.Tiny(V, C, bad=bad).eval()  # built by hand, around the probe
    for beam in (1, 3):
        with pytest.raises(ContractError, match=re.escape("step(prev_tokens, state, memory) returned logits")):
            beam_search(dec, features(2), bos_id=1, eos_id=2, beam_size=beam, max_len=5)
    with pytest.raises(ContractError):
        sample(dec, features(2), bos_id=1, eos_id=2, n=2, max_len=5)


def test_zoo_train_stops_before_any_step(plugin, tmp_path, capsys):
    from zoo.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--encoder", "resnet10t", "--decoder", "tiny-test", "--tokenizer", "word", "--freeze",
               "--val-split", "none", "--set", "data.num_train=8", "--set", "train.steps=2",
               "--set", "decoder.bad=step-vb", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "breaks the decoder contract" in err, err
    assert not (out / "state.safetensors").exists() and not (out / "log.jsonl").exists()


def test_zoo_compare_probes_every_decoder_before_the_first_run(plugin, tmp_path):
    from zoo.results.compare import CompareConfig, compare

    cfg = CompareConfig(encoders=["resnet10t"], decoders=["gru", "tiny-broken"], tokenizers=["word"],
                        train={"steps": 1, "batch_size": 4}, encoder_kwargs={"img_size": 32, "freeze": True},
                        decoder_kwargs={"hidden_size": 8}, data_options={"num_train": 8, "num_val": 4, "num_test": 4},
                        metrics=("cider-d",))
    with pytest.raises(ContractError, match="'tiny-broken'.*step.*shape \\(3, 1, 64\\)"):
        compare(cfg, tmp_path / "cmp", db_path=tmp_path / "db.sqlite", progress=False, say=lambda s: None)
    assert not (tmp_path / "cmp").exists()  # the gru run listed first never trained


# -- options are plain JSON --------------------------------------------------------------------------------
def test_a_non_json_default_is_refused_at_registration(fresh_registry, tmp_path):
    path = tmp_path / "fn_default.py"
    path.write_text(textwrap.dedent('''
        import torch, zoo

        class FnDefault(zoo.Decoder):
            def __init__(self, vocab_size, feature_dim, activation=torch.tanh):
                super().__init__(vocab_size, feature_dim)

        @zoo.hookimpl
        def zoo_register(registry):
            registry.add_decoder("fn-default", FnDefault)
    '''))
    with pytest.raises(PluginLoadError) as info:
        zoo.load_plugin(str(path), name="fn-default-plugin")
    msg = str(info.value)
    assert "decoder 'fn-default' from plugin 'fn-default-plugin'" in msg and "option 'activation'" in msg
    assert "built-in method tanh" in msg and "plain JSON" in msg and "'tanh'" in msg
    assert ("decoder", "fn-default") not in zoo.get_registry()


def test_a_non_json_value_is_refused_at_construction_naming_the_option(plugin):
    with pytest.raises(ContractError) as info:
        zoo.create_decoder("tiny-test", V, C, activation=torch.tanh)
    msg = str(info.value)
    assert "decoder 'tiny-test' (plugin 'tiny-test-plugin'): option 'activation'" in msg and "plain JSON" in msg
    with pytest.raises(ContractError, match=r"option 'dropout' = .*0.1.* \(a float32\).*value.item\(\)"):
        zoo.create_decoder("gru", V, C, dropout=np.float32(0.1))  # json.dumps refuses numpy scalars


# -- --plugin whose own import fails ------------------------------------------------------------------------
def test_a_plugin_missing_a_dependency_says_which(fresh_registry, tmp_path, monkeypatch):
    (tmp_path / "needs_dep_plugin.py").write_text("import zoo_no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec in ("needs_dep_plugin", str(tmp_path / "needs_dep_plugin.py")):
        with pytest.raises(PluginLoadError) as info:
            zoo.load_plugin(spec)
        msg = str(info.value)
        assert "was found, but its dependency 'zoo_no_such_dependency_xyz' was not" in msg, msg
        assert "Check the module name" not in msg and "needs_dep_plugin.py:1" in msg
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PluginLoadError, match="was found, but importing it raised RuntimeError: boom"):
        zoo.load_plugin("broken_plugin")
    with pytest.raises(PluginLoadError, match="Check the module name"):  # the plugin itself is missing
        zoo.load_plugin("no_such_plugin_module_xyz")


class _Attending(zoo.Decoder):
    """Dot-product attention over the grid; ``weights`` says what ``last_attention`` returns."""

    attends = True

    def __init__(self, vocab_size, feature_dim, weights: str = "softmax"):
        super().__init__(vocab_size, feature_dim)
        self.weights = weights
        self.embed = torch.nn.Embedding(vocab_size, feature_dim)
        self.out = torch.nn.Linear(feature_dim, vocab_size)

    def init_state(self, memory):
        return memory.pooled, memory.grid.new_zeros(memory.grid.shape[:2])

    def step(self, prev_tokens, state, memory):
        scores = torch.einsum("bnc,bc->bn", memory.grid, state[0] + self.embed(prev_tokens))
        alpha = {"softmax": scores.softmax(-1), "scores": scores, "sigmoid": scores.sigmoid()}[self.weights]
        context = torch.einsum("bn,bnc->bc", scores.softmax(-1), memory.grid)
        return self.out(context), (context, alpha)

    def last_attention(self, state):
        return state[1]

    def forward(self, features, tokens):
        return self.forward_stepwise(features, tokens)


def test_attention_weights_that_are_not_a_distribution_break_the_contract(fresh_registry):
    """The attention figures read each row as where the decoder looked; raw scores drawn as weights
    would show a picture that means nothing, so the probe says so where the decoder is built."""

    @zoo.hookimpl
    def zoo_register(registry):
        registry.add_decoder("attending", _Attending)

    zoo.load_plugin(zoo_register, name="attending-plugin")
    zoo.create_decoder("attending", V, C)  # softmax weights: fine
    for weights in ("scores", "sigmoid"):
        with pytest.raises(ContractError) as info:
            zoo.create_decoder("attending", V, C, weights=weights)
        msg = str(info.value)
        assert "last_attention(state)" in msg and "sum to 1" in msg and "'attending'" in msg, msg


# -- what the probe missed (issue 17, items 12 and 13) -------------------------------------------------------
def test_attention_weights_that_do_not_sum_to_one_are_refused_at_build(plugin):
    zoo.create_decoder("tiny-attn", V, C)  # a distribution passes
    with pytest.raises(ContractError) as info:
        zoo.create_decoder("tiny-attn", V, C, scale=1 / 3)
    msg = str(info.value)
    assert "'tiny-attn'" in msg and "plugin 'tiny-test-plugin'" in msg and "last_attention(state)" in msg, msg
    assert "sum to 1" in msg and "0.3333" in msg, msg


def test_check_decoder_refuses_attention_that_does_not_sum_to_one_naming_the_plugin(plugin):
    from zoo.testing import check_decoder

    with pytest.raises(ContractError, match=r"'tiny-attn' \(plugin 'tiny-test-plugin'.*sum to 1"):
        check_decoder(plugin.TinyAttn, scale=1 / 3, steps=1)


@pytest.mark.parametrize("limit", [6, 8, 16, 32])
def test_a_step_that_fails_above_a_few_rows_is_caught_at_build(plugin, limit):
    with pytest.raises(ContractError) as info:
        zoo.create_decoder("tiny-test", V, C, bad=f"step-max{limit}")
    msg = str(info.value)
    assert "'tiny-test'" in msg and "plugin 'tiny-test-plugin'" in msg and "step(prev_tokens" in msg, msg
    assert f"my buffer holds {limit} rows" in msg and "expanded as the beam search does" in msg, msg


def test_a_failure_inside_a_plugin_while_decoding_names_the_plugin_and_the_part(plugin):
    from zoo.errors import PluginError
    from tests.helpers import tiny_tokenizer

    model = zoo.create_model(encoder="resnet10t", decoder="tiny-test", tokenizer=tiny_tokenizer(),
                             encoder_kwargs={"img_size": 32}, decoder_kwargs={"bad": "step-max40"})
    images = torch.randn(16, 3, 32, 32)  # 16 images x beam 3 = 48 rows: beyond what the probe tries
    with pytest.raises(PluginError) as info:
        model.generate(images, beam_size=3, max_len=3)
    msg = str(info.value)
    assert "decoder 'tiny-test'" in msg and "plugin 'tiny-test-plugin'" in msg and "my buffer holds 40 rows" in msg
    assert "tiny_test_plugin.py" in msg and "RuntimeError" in msg, msg
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_failure_inside_a_plugin_in_a_training_step_names_the_plugin(plugin, tmp_path, capsys):
    from zoo.cli import main

    rc = main(["train", "--encoder", "resnet10t", "--decoder", "tiny-attn", "--tokenizer", "word", "--freeze",
               "--val-split", "none", "--set", "data.num_train=8", "--set", "train.steps=2",
               "--set", "decoder.train_fails=true", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert "decoder 'tiny-attn'" in err and "plugin 'tiny-test-plugin'" in err and "my training path is broken" in err, err


def test_a_decoder_failing_only_at_validation_names_the_plugin(plugin, tmp_path, capsys):
    """The issue's case: a step that works on the probe and the training batches, and fails on the first
    validation's larger batch (16 images x beam 3 = 48 rows)."""
    from zoo.cli import main

    rc = main(["train", "--encoder", "resnet10t", "--decoder", "tiny-test", "--tokenizer", "word", "--freeze",
               "--set", "data.num_train=8", "--set", "data.num_val=16", "--set", "train.steps=2",
               "--set", "train.batch_size=4", "--set", "train.val_images=16", "--set", "train.val_beam_size=3",
               "--set", "decoder.bad=step-max40", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert "decoder 'tiny-test'" in err and "plugin 'tiny-test-plugin'" in err and "my buffer holds 40 rows" in err, err
    assert "tiny_test_plugin.py" in err, err


def test_a_failure_inside_a_plugin_while_building_names_the_plugin(plugin):
    from zoo.errors import PluginError

    with pytest.raises(PluginError) as info:
        zoo.create_decoder("tiny-test", V, C, bad="init-raises")
    msg = str(info.value)
    assert "decoder 'tiny-test'" in msg and "plugin 'tiny-test-plugin'" in msg and "cannot build" in msg, msg
    assert "tiny_test_plugin.py:" in msg and "ValueError" in msg, msg


def test_a_shape_fault_caught_by_the_beam_search_names_the_plugin(plugin):
    """The beam search's per-step shape guard knows only the decoder's class; the model's decoding context
    adds the registered name and the plugin."""
    from tests.helpers import tiny_tokenizer

    model = zoo.create_model(encoder="resnet10t", decoder="tiny-test", tokenizer=tiny_tokenizer(),
                             encoder_kwargs={"img_size": 32}, decoder_kwargs={"bad": "step-short-above40"})
    with pytest.raises(ContractError) as info:
        model.generate(torch.randn(16, 3, 32, 32), beam_size=3, max_len=3)
    msg = str(info.value)
    assert "decoder 'tiny-test' (plugin 'tiny-test-plugin')" in msg and "step(prev_tokens" in msg, msg
