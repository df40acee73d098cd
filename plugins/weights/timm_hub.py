"""timm's own pretrained weights (Hugging Face Hub or release URLs): the last weight source asked.

Marked ``trylast`` so every offline source answers first. Being last, it does not hide a download failure
behind ``None`` (which would end in a vaguer "no source had weights"): it raises, saying the hub could not
be reached and which offline sources are installed. It returns None only when timm has no pretrained
weights for the name at all.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, Callable

import timm
import torch
from timm.models import is_model_pretrained
from torch import nn

import zoo
from zoo.errors import ZooError

SOURCE_NAME = "timm-hub-weights"
# huggingface_hub, requests and urllib all raise OSError subclasses when the network is unreachable
# (LocalEntryNotFoundError, HfHubHTTPError, URLError, ConnectionError, TimeoutError).
NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError,)


@zoo.hookimpl(trylast=True)
def zoo_pretrained_weights(encoder_name: str, model: nn.Module) -> dict[str, Any] | None:
    """timm's state dict for ``encoder_name``, adapted by timm's own filter to ``model`` if its
    configuration differs (e.g. a ViT built for another ``img_size`` gets resampled position embeddings)."""
    if not is_model_pretrained(encoder_name):
        return None
    try:
        source = timm.create_model(encoder_name, pretrained=True)
    except NETWORK_ERRORS as exc:
        raise ZooError(
            f"could not download timm's pretrained weights for {encoder_name!r} (offline? "
            f"{type(exc).__name__}: {_first_line(exc)}). {_offline_alternatives()}"
        ) from exc
    state = source.state_dict()
    del source
    return adapt_to_model(state, model)


def adapt_to_model(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Run timm's ``checkpoint_filter_fn`` of the model's module when shapes disagree; timm ships one per
    architecture to resample position embeddings, patch embeddings and the like."""
    own = model.state_dict()
    if all(k not in own or tuple(v.shape) == tuple(own[k].shape) for k, v in state.items()):
        return state
    module = sys.modules.get(type(model).__module__)
    filter_fn: Callable[..., Any] | None = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is None or len(inspect.signature(filter_fn).parameters) < 2:
        return state  # the encoder's strict load names the mismatching keys
    return dict(filter_fn(state, model))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


def _offline_alternatives() -> str:
    """Name the other weight sources installed (first line of each plugin's docstring)."""
    pm = zoo.get_plugin_manager()
    others = [
        f"{impl.plugin_name} ({_summary(impl.plugin)})"
        for impl in pm.hook.zoo_pretrained_weights.get_hookimpls()
        if impl.function is not zoo_pretrained_weights
    ]
    listed = "; ".join(others) if others else "none installed"
    return (
        f"Offline weight sources: {listed}. Otherwise copy the weights into the Hugging Face cache "
        f"(HF_HOME) on a connected machine, or give a .safetensors/.pth state dict (`--pretrained PATH`; "
        f"`pretrained=PATH` in Python). On a machine that is always offline, HF_HUB_OFFLINE=1 makes this "
        f"error come at once instead of after the hub's retries."
    )


def _summary(plugin: Any) -> str:
    doc = inspect.getdoc(plugin) or ""
    return doc.splitlines()[0] if doc else "no description"
