"""The plugin's own tests: one call to ``zoo.testing.check_decoder`` checks the decoder contract, that
the decoder learns, forward against forward_stepwise, bit-exact save/load and beam search ≥ greedy.
Run with ``ZOO_DISABLE_PLUGIN_AUTOLOAD=1 pytest tests`` from this folder (with caption-zoo installed)."""

from __future__ import annotations

import torch

import zoo
from zoo.testing import check_decoder
from zoo_transformer import TransformerDecoder


def test_transformer_decoder_keeps_the_contract_and_learns():
    torch.set_num_threads(1)  # tiny tensors: more threads only add contention
    check_decoder(TransformerDecoder, d_model=32, num_heads=4, num_layers=2, dropout=0.0, lr=3e-3)


def test_it_registers_under_its_name():
    zoo.load_plugin("zoo_transformer")
    assert zoo.get_registry().get("decoder", "transformer").factory is TransformerDecoder
