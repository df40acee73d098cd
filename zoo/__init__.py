"""Caption Zoo: plug an image encoder, a caption decoder and a tokenizer together by name.

The front door::

    import zoo
    model = zoo.create_model(encoder="resnet10t", decoder="gru-attn", tokenizer=tok)
    captions = model.generate(images, beam_size=3)
    zoo.save(model, "m.safetensors"); same = zoo.load("m.safetensors")
"""

from __future__ import annotations

__version__ = "0.1.0"

from zoo.checkpoint import load, save
from zoo.decoder import Decoder
from zoo.encoder import Encoder
from zoo.errors import ZooError
from zoo.factory import (
    create_decoder,
    create_encoder,
    create_model,
    create_tokenizer,
    list_models,
    list_names,
)
from zoo.features import Features
from zoo.hookspecs import hookimpl
from zoo.manager import get_plugin_manager, get_registry, load_plugin
from zoo.model import CaptionModel
from zoo.tokenizer import Tokenizer

__all__ = [
    "__version__",
    "CaptionModel",
    "Decoder",
    "Encoder",
    "Features",
    "Tokenizer",
    "ZooError",
    "create_decoder",
    "create_encoder",
    "create_model",
    "create_tokenizer",
    "get_plugin_manager",
    "get_registry",
    "hookimpl",
    "list_models",
    "list_names",
    "load",
    "load_plugin",
    "save",
]
