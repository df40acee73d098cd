"""Caption Zoo: plug an image encoder, a caption decoder and a tokenizer together by name.

The front door::

    import zoo
    model = zoo.create_model(encoder="resnet10t", decoder="gru-attn", tokenizer=tok)
    captions = model.generate(images, beam_size=3)
    zoo.save(model, "m.safetensors"); same = zoo.load("m.safetensors")
"""

from __future__ import annotations

from zoo import _compat
from zoo.contracts.decoder import Decoder
from zoo.contracts.encoder import Encoder
from zoo.contracts.executor import Executor, JobState, StopRequested, Task, request_stop
from zoo.contracts.features import Features
from zoo.contracts.tokenizer import Tokenizer
from zoo.errors import ZooError
from zoo.models.builder import create_decoder, create_encoder, create_tokenizer
from zoo.models.caption_model import CaptionModel
from zoo.models.checkpoint import load, save
from zoo.models.factory import create_model, list_models, list_names
from zoo.registry.hookspecs import hookimpl
from zoo.registry.loading import load_plugin
from zoo.registry.manager import get_plugin_manager, get_registry
from zoo.version import __version__

_compat.install()  # the module paths of 0.1 (zoo.objective, zoo.tokenizer, …) keep working

__all__ = [
    "__version__",
    "CaptionModel",
    "Decoder",
    "Encoder",
    "Executor",
    "JobState",
    "StopRequested",
    "Task",
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
    "request_stop",
    "save",
]
