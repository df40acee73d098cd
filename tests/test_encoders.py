"""timm backbones as encoders: names, grid/pooled features, transforms, freezing, weight files."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

import zoo
from zoo.errors import UnknownNameError, ZooError


def _encoder(name: str, **kwargs) -> "zoo.Encoder":
    torch.manual_seed(0)
    return zoo.create_encoder(name, **kwargs)


def _images(n: int, size: int) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


# -- names ----------------------------------------------------------------------------------------------
def test_every_timm_name_is_an_encoder_including_pretrained_tags():
    convnext = zoo.list_names("encoders", "convnext*")
    assert "convnext_tiny" in convnext and "convnext_atto.d2_in1k" in convnext
    entry = zoo.get_registry().get("encoder", "vit_base_patch16_224.augreg_in21k")
    assert entry.family == "timm" and entry.module == "zoo_plugins.encoders.timm_encoder"
    assert {"pretrained", "freeze", "img_size"} <= set(entry.options())


def test_unknown_encoder_suggests_close_names():
    with pytest.raises(UnknownNameError, match="resnet10t"):
        zoo.create_encoder("resnet10x")


# -- features -------------------------------------------------------------------------------------------
@torch.no_grad()
def test_cnn_grid_is_the_flattened_feature_map_and_pooled_is_the_models_own_head():
    enc = _encoder("resnet10t", img_size=64).eval()
    x = _images(2, 64)
    feats = enc(x)
    fmap = enc.model.forward_features(x)  # (B, C, H, W) = (2, 512, 2, 2)
    assert enc.feature_dim == 512 and feats.grid.shape == (2, 4, 512) and feats.pooled.shape == (2, 512)
    # position h*W + w of the grid is pixel (h, w) of the map
    assert torch.equal(feats.grid[:, 1 * 2 + 0], fmap[:, :, 1, 0])
    torch.testing.assert_close(feats.pooled, enc.model.forward_head(fmap, pre_logits=True))


@pytest.mark.parametrize("name, prefix", [("test_vit", 1), ("test_vit_relpos", 0)])
@torch.no_grad()
def test_vit_grid_holds_patches_only(name, prefix):
    enc = _encoder(name, img_size=96).eval()
    x = _images(2, 96)
    feats = enc(x)
    tokens = enc.model.forward_features(x)
    n_patches = enc.model.patch_embed.num_patches
    assert n_patches == (96 // 16) ** 2
    assert tokens.shape[1] == n_patches + prefix
    assert feats.grid.shape == (2, n_patches, enc.feature_dim)
    assert torch.equal(feats.grid, tokens[:, prefix:])
    torch.testing.assert_close(feats.pooled, enc.model.forward_head(tokens, pre_logits=True))
    if prefix:  # the class token is the pooled vector, not a grid cell
        assert not any(torch.allclose(feats.pooled[0], g) for g in feats.grid[0])


@torch.no_grad()
def test_another_cnn_family_efficientnet():
    enc = _encoder("test_efficientnet", img_size=64).eval()
    feats = enc(_images(1, 64))
    assert feats.grid.shape == (1, 4, enc.feature_dim) and feats.pooled.shape == (1, enc.feature_dim)
    torch.testing.assert_close(feats.pooled, feats.grid.mean(dim=1), rtol=1e-5, atol=1e-5)  # avg pool


@torch.no_grad()
def test_channels_last_model_and_head_wider_than_grid():
    """MambaOut returns NHWC maps and an MLP head wider than its channels: the grid is NHWC flattened,
    the pooled vector keeps the grid's width (what the decoder contract needs)."""
    enc = _encoder("test_mambaout", img_size=64).eval()
    x = _images(2, 64)
    fmap = enc.model.forward_features(x)
    assert fmap.shape[-1] == enc.feature_dim  # NHWC
    feats = enc(x)
    h, w = fmap.shape[1:3]
    assert feats.grid.shape == (2, h * w, enc.feature_dim)
    assert torch.equal(feats.grid[:, w + 1], fmap[:, 1, 1])
    assert feats.pooled.shape == (2, enc.feature_dim)



# -- families whose forward_features is not a grid as it stands -------------------------------------------
@torch.no_grad()
def test_class_token_without_num_prefix_tokens_is_cut_off():
    """CoaT-Lite puts a class token first but declares no num_prefix_tokens: the grid is the 2x2 positions."""
    enc = _encoder("coat_lite_tiny", img_size=64).eval()
    x = _images(2, 64)
    tokens = enc.model.forward_features(x)
    assert tokens.shape == (2, 1 + 4, 320)
    feats = enc(x)
    assert feats.grid.shape == (2, 4, 320) and torch.equal(feats.grid, tokens[:, 1:])
    torch.testing.assert_close(feats.pooled, tokens[:, 0])  # the class token is the pooled vector only


@torch.no_grad()
def test_model_whose_features_are_only_class_tokens_takes_the_last_spatial_map():
    """PiT's forward_features returns just its class token (B, 1, C); the grid is its last stage's map."""
    enc = _encoder("pit_ti_224", img_size=64).eval()
    x = _images(2, 64)
    assert enc.model.forward_features(x).shape == (2, 1, 256)
    feats = enc(x)
    (last,) = enc.model.forward_intermediates(x, indices=1, intermediates_only=True)
    h, w = last.shape[2:]
    assert h * w > 1 and feats.grid.shape == (2, h * w, 256) and feats.pooled.shape == (2, 256)
    assert torch.equal(feats.grid[:, w + 1], last[:, :, 1, 1])  # position h*W + w is pixel (h, w)
    torch.testing.assert_close(feats.pooled, enc.model.forward_head(enc.model.forward_features(x), pre_logits=True))


def test_model_without_a_usable_grid_is_refused_at_construction():
    """CrossViT has two token branches of different widths (96 and 192) and pools them together (288)."""
    with pytest.raises(ZooError) as err:
        zoo.create_encoder("crossvit_tiny_240")
    msg = str(err.value)
    assert "'crossvit_tiny_240'" in msg and "no spatial grid the zoo can use" in msg
    assert "192 channels" in msg and "288" in msg and "vit_small_patch16_224" in msg


def test_construction_keeps_the_training_mode_and_the_random_stream():
    """The one-off check of the grid layout runs in eval mode on a fixed image: it must leave the
    backbone in training mode and draw nothing from the random generator (seeded models stay identical)."""
    torch.manual_seed(0)
    enc = zoo.create_encoder("resnet10t", img_size=32)
    after_encoder = torch.rand(3)
    torch.manual_seed(0)
    plain = timm.create_model("resnet10t", num_classes=0)
    assert torch.equal(after_encoder, torch.rand(3))
    assert enc.model.training and all(m.training for m in enc.model.modules())
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in enc.model.state_dict().items())


# -- transform ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, img_size, expect", [("resnet10t", 80, 80), ("test_vit", None, 160)])
def test_transform_makes_tensors_of_the_models_input_size(name, img_size, expect):
    enc = _encoder(name, img_size=img_size)
    grey = Image.new("L", (120, 90), 128)  # COCO has greyscale images: converted to RGB
    for train in (False, True):
        out = enc.transform(train=train)(grey)
        assert out.shape == (3, expect, expect)
    mean = enc.data_config()["mean"]
    assert mean == tuple(enc.model.pretrained_cfg["mean"])


# -- freezing -------------------------------------------------------------------------------------------
def test_freeze_keeps_the_backbone_in_eval_mode_and_without_gradients():
    enc = _encoder("resnet10t", freeze=True)
    parent = nn.Sequential(enc)
    parent.train()
    assert enc.frozen and all(not p.requires_grad for p in enc.parameters())
    bns = [m for m in enc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    before = bns[0].running_mean.clone()
    enc(_images(2, 64) * 5 + 3)
    assert torch.equal(bns[0].running_mean, before)
    unfrozen = _encoder("resnet10t").train()
    assert all(p.requires_grad for p in unfrozen.parameters()) and unfrozen.model.training


# -- weight files ---------------------------------------------------------------------------------------
def _timm_state(name: str, seed: int, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return timm.create_model(name, **kwargs).state_dict()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_path_round_trip(tmp_path, suffix):
    state = _timm_state("resnet10t", seed=7)  # with the 1000-class fc: dropped on load
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    enc = zoo.create_encoder("resnet10t", pretrained=str(path))
    for k, v in enc.model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert enc.weights_id().startswith("file:") and len(enc.weights_id()) == len("file:") + 16
    assert _encoder("resnet10t").weights_id() == "random"


def test_encoder_state_dict_and_wrapped_checkpoints_load_too(tmp_path):
    enc = _encoder("resnet10t")
    torch.save({"state_dict": enc.state_dict()}, tmp_path / "ckpt.pt")  # keys "model.*" inside a wrapper
    again = zoo.create_encoder("resnet10t", pretrained=tmp_path / "ckpt.pt")
    assert torch.equal(again.model.conv1[0].weight, enc.model.conv1[0].weight)


def test_weight_file_errors_name_the_file_and_the_keys(tmp_path):
    with pytest.raises(ZooError, match="nope.safetensors does not exist"):
        zoo.create_encoder("resnet10t", pretrained=str(tmp_path / "nope.safetensors"))
    state = _timm_state("resnet10t", seed=0)
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["conv1.0.weight"] = torch.zeros(3, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ZooError) as err:
        zoo.create_encoder("resnet10t", pretrained=path)
    msg = str(err.value)
    assert "bad.pth" in msg and "resnet10t" in msg
    assert "missing 1 key(s): layer1.0.conv1.weight" in msg
    assert "unexpected 1 key(s): extra.weight" in msg
    assert "conv1.0.weight (3, 3, 3, 3) vs (24, 3, 3, 3)" in msg
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ZooError, match="unknown format"):
        zoo.create_encoder("resnet10t", pretrained=tmp_path / "w.npz")


# -- identity -------------------------------------------------------------------------------------------
def test_config_is_json_and_rebuilds_the_encoder():
    enc = _encoder("test_vit", img_size=96, freeze=True, drop_path_rate=0.1)
    cfg = json.loads(json.dumps(enc.config()))
    assert cfg == {"img_size": 96, "freeze": True, "drop_path_rate": 0.1}
    again = zoo.create_encoder("test_vit", **cfg)
    assert again.frozen and again.model.patch_embed.num_patches == 36
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in enc.state_dict().items()}


def test_bad_options_are_zoo_errors():
    with pytest.raises(ZooError, match="img_size"):
        zoo.create_encoder("resnet10t", img_size=(1, 2, 3))
    with pytest.raises(ZooError, match="not_an_option"):
        zoo.create_encoder("resnet10t", not_an_option=1)
