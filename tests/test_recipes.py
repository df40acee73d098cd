"""registry.yaml: the catalogue loads, and bad entries are reported with the recipe and the key."""

from __future__ import annotations

import pytest

import zoo
from zoo.errors import RecipeError
from zoo.registry.recipes import parse_file

from .helpers import tiny_tokenizer

_OK = "encoder: resnet10t\ndecoder: gru\ntokenizer: word\n"


def test_catalogue_has_the_four_decoders_on_coco():
    names = zoo.list_models()
    assert "gru-resnet50-coco" in names
    from zoo.registry.recipes import load_recipes

    recipes = load_recipes()
    coco = [r for r in recipes.values() if r.data.get("name") == "coco-karpathy"]
    assert {r.decoder for r in coco} >= {"gru", "gru-stacked", "gru-attn", "lstm"}
    assert zoo.list_models("gru-*") and all(n.startswith("gru-") for n in zoo.list_models("gru-*"))


def test_create_model_from_recipe_with_tokenizer():
    model = zoo.create_model("gru-resnet10t-shapes", tokenizer=tiny_tokenizer())
    assert model.config["recipe"] == "gru-resnet10t-shapes"
    assert model.config["decoder"]["name"] == "gru" and model.decoder.vocab_size == model.tokenizer.vocab_size


def test_recipe_without_weights_or_tokenizer_says_what_to_do():
    with pytest.raises(RecipeError, match=r"no trained weights yet.*tokenizer=.*zoo train gru-resnet50-coco"):
        zoo.create_model("gru-resnet50-coco")


def test_unknown_recipe_suggests():
    with pytest.raises(RecipeError, match="Did you mean: gru-resnet50-coco"):
        zoo.create_model("gru-resnet50-coc")


@pytest.mark.parametrize(
    "body, message",
    [
        ("encoder: resnet10t\ndecoder: gru\n", r"recipe 'bad'.*missing key 'tokenizer'"),
        ("encoder: resnet10t\ndecoder: gru\ntokenizer: word\nepochs: 3\n", r"recipe 'bad'.*unknown key 'epochs'"),
        ("encoder: resnet10t\ndecoder: gru-atn\ntokenizer: word\n", r"recipe 'bad'.*key 'decoder'.*gru-attn"),
        ("encoder: resnet10t\ndecoder: {name: gru, kwargs: 3}\ntokenizer: word\n", r"recipe 'bad'.*decoder.kwargs must be a mapping"),
        ("encoder: resnet10t\ndecoder: gru\ntokenizer: word\nweights: {url: x}\n", r"recipe 'bad'.*'weights'.*'url' and 'sha256'"),
        ("encoder: resnet10t\ndecoder: gru\ntokenizer: word\nweights: {url: x, sha256: abc}\n", r"recipe 'bad'.*64 hex digits"),
        ("encoder: resnet10t\ndecoder: {nme: gru}\ntokenizer: word\n", r"recipe 'bad'.*'decoder'.*mapping with 'name'"),
        # every recipe names its data set (nothing is assumed), and it must be registered
        ("encoder: resnet10t\ndecoder: gru\ntokenizer: word\n", r"recipe 'bad'.*key 'data.name'.*missing.*e.g. data: \{name: coco-karpathy\}"),
        ("encoder: resnet10t\ndecoder: gru\ntokenizer: word\ndata: {max_caption_len: 16}\n", r"recipe 'bad'.*key 'data.name'.*missing"),
        (f"{_OK}data: {{name: coco-karpaty}}\n", r"recipe 'bad'.*key 'data.name'.*unknown dataset 'coco-karpaty'.*Did you mean: coco-karpathy"),
        (f"{_OK}data: {{name: shapes}}\nweights: {{url: 42, sha256: {'a' * 64}}}\n", r"recipe 'bad'.*key 'weights.url' must be a string.*got int 42.*e.g. url: https://"),
        (f"{_OK}data: {{name: shapes}}\nscores: ['oops', 3]\n", r"recipe 'bad'.*key 'scores\[0\]' must be a mapping of metric.*e.g. \{data: coco-karpathy, split: test"),
        (f"{_OK}data: {{name: shapes}}\nscores: [{{data: shapes, split: test, CIDEr-D: high}}]\n", r"recipe 'bad'.*key 'scores\[0\].CIDEr-D' must be a number.*got str 'high'"),
        (f"{_OK}data: {{name: shapes}}\nscores: [{{data: shapes, spilt: test, CIDEr-D: 9.5}}]\n", r"recipe 'bad'.*key 'scores\[0\].spilt' must be a number.*Did you mean: split"),
        (f"{_OK}data: {{name: shapes}}\nscores: [{{data: shape, split: test, CIDEr-D: 9.5}}]\n", r"recipe 'bad'.*key 'scores\[0\].data'.*Did you mean: shapes"),
        # options are checked against the registered factory's, the ones `zoo info` lists
        ("encoder: resnet10t\ndecoder: {name: gru, kwargs: {hiden_size: 8}}\ntokenizer: word\ndata: {name: shapes}\n", r"recipe 'bad'.*unknown option decoder.kwargs.hiden_size; did you mean hidden_size\?"),
        ("encoder: resnet10t\ndecoder: gru\ntokenizer: {name: word, kwargs: {min_cout: 1}}\ndata: {name: shapes}\n", r"recipe 'bad'.*unknown option tokenizer.kwargs.min_cout; did you mean min_count\?"),
        # timm.is_model ignores the tag; the pretrained tag must exist
        ("encoder: resnet50.a1_in1kk\ndecoder: gru\ntokenizer: word\ndata: {name: shapes}\n", r"recipe 'bad'.*key 'encoder'.*no pretrained tag 'a1_in1kk'.*Did you mean: resnet50.a1_in1k"),
        ("encoder: resnet10t\ndecoder: gru\ntokenizer: word\ndata: {name: shapes}\nscore: []\n", r"recipe 'bad'.*unknown key 'score'.*Did you mean: scores"),
        # pretrained: true or false at the recipe's top level, not an encoder option
        (f"{_OK}data: {{name: shapes}}\npretrained: imagenet\n", r"recipe 'bad'.*key 'pretrained' must be true or false.*got str 'imagenet'"),
        ("encoder: {name: resnet10t, kwargs: {pretrained: true}}\ndecoder: gru\ntokenizer: word\ndata: {name: shapes}\n",
         r"recipe 'bad'.*key 'encoder.kwargs.pretrained'.*top level.*pretrained: true"),
    ],
)
def test_bad_entries_name_recipe_and_key(tmp_path, body, message):
    f = tmp_path / "registry.yaml"
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    f.write_text(f"models:\n  bad:\n{indented}\n")
    with pytest.raises(RecipeError, match=message) as exc:
        parse_file(f)
    assert str(f) in str(exc.value)


def test_bad_yaml_and_layout(tmp_path):
    f = tmp_path / "registry.yaml"
    f.write_text("models: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        parse_file(f)
    f.write_text("recipes: {}\n")
    with pytest.raises(RecipeError, match="top-level 'models:'"):
        parse_file(f)


def test_complete_recipe_with_weights_and_scores_is_accepted(tmp_path):
    f = tmp_path / "registry.yaml"
    f.write_text(
        "models:\n  good:\n"
        "    encoder: {name: resnet50.a1_in1k, kwargs: {freeze: true, drop_path_rate: 0.1}}\n"
        "    decoder: {name: gru-attn, kwargs: {hidden_size: 64, attention_size: 32}}\n"
        "    tokenizer: {name: sentencepiece, kwargs: {vocab_size: 500}}\n"
        "    data: {name: coco-karpathy, max_caption_len: 16}\n"
        f"    weights: {{url: 'https://example.org/good.safetensors', sha256: {'0f' * 32}}}\n"
        "    scores: [{data: coco-karpathy, split: test, decoding: {beam_size: 3}, BLEU-4: 30.1, CIDEr-D: 95}]\n"
    )
    r = parse_file(f)["good"]
    assert r.data["name"] == "coco-karpathy" and r.scores[0]["CIDEr-D"] == 95


# -- recipe files from plugins: a bad one is skipped and reported, the rest still load ----------------------
def _recipe_plugin(tmp_path, file_name: str, body: str):
    import types

    path = tmp_path / file_name
    path.write_text(body)
    plugin = types.ModuleType(f"plugin_{path.stem}")

    @zoo.hookimpl
    def zoo_register(registry):
        registry.add_recipes(path)

    plugin.zoo_register = zoo_register
    return plugin, path


_MISSING_DECODER = "models:\n  their-model:\n    encoder: resnet10t\n    decoder: transformer\n    tokenizer: word\n    data: {name: shapes}\n"
_CLASHING = "models:\n  gru-resnet10t-shapes:\n    encoder: resnet10t\n    decoder: gru\n    tokenizer: word\n    data: {name: shapes}\n"


def test_bad_plugin_recipe_file_is_skipped_and_reported(fresh_registry, tmp_path, monkeypatch, capsys):
    from zoo.cli import main

    from .test_registry import _fake_entry_points

    missing, missing_path = _recipe_plugin(tmp_path, "needs_transformer.yaml", _MISSING_DECODER)
    clash, _ = _recipe_plugin(tmp_path, "clashing.yaml", _CLASHING)
    _fake_entry_points(monkeypatch, ("their-dist", "their-recipes", missing), ("clash-dist", "clash-recipes", clash))
    with pytest.warns(UserWarning, match="their-recipes"):
        names = zoo.list_models()
    assert "gru-resnet50-coco" in names and "their-model" not in names
    failed = zoo.get_registry().failed_plugins
    assert str(missing_path) in failed["their-recipes"] and "unknown decoder 'transformer'" in failed["their-recipes"]
    # a duplicate recipe name names both plugins
    assert "'recipes'" in failed["clash-recipes"] and "'clash-recipes'" in failed["clash-recipes"]
    assert zoo.get_registry().get("decoder", "gru")  # everything else is there
    rc = main(["list", "models"])
    out, err = capsys.readouterr()
    assert rc == 0 and "gru-resnet50-coco" in out.split()
    assert "warning: plugin 'their-recipes' failed to load" in err
    rc = main(["info", "gru-resnet10t-shapes"])
    out, err = capsys.readouterr()
    assert rc == 0 and "registry.yaml" in out and "warning: plugin 'clash-recipes' failed to load" in err


def test_hand_loaded_plugin_with_bad_recipe_file_is_an_error(fresh_registry, tmp_path):
    from zoo.errors import PluginLoadError

    plugin, path = _recipe_plugin(tmp_path, "needs_transformer.yaml", _MISSING_DECODER)
    with pytest.raises(PluginLoadError, match=r"plugin 'mine'.*needs_transformer.yaml.*'transformer'"):
        zoo.load_plugin(plugin, name="mine")
    assert "their-model" not in zoo.list_models() and "mine" not in zoo.get_registry().failed_plugins


# -- where the catalogue is found ---------------------------------------------------------------------------
class _FakeDist:
    """caption-zoo as pip lists it after a ``--user``/``--prefix`` install: the data file relative to
    site-packages."""

    def __init__(self, site, files):
        self.site, self.files = site, files

    def locate_file(self, path):
        return self.site / path


def _installed_elsewhere(monkeypatch, tmp_path, files):
    import importlib.metadata
    import sys

    import zoo_plugins.recipes as catalogue_plugin

    site = tmp_path / "user" / "lib" / "python3" / "site-packages"
    site.mkdir(parents=True)
    monkeypatch.setattr(catalogue_plugin, "CHECKOUT_ROOT", None)  # not an editable install
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))  # nothing under sys.prefix
    real = importlib.metadata.distribution
    fake = _FakeDist(site, files)
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: fake if name == "caption-zoo" else real(name))
    return site


def test_catalogue_found_through_the_installed_distribution(fresh_registry, monkeypatch, tmp_path):
    from importlib.metadata import PackagePath

    from .conftest import ROOT

    rel = PackagePath("../../../share/caption-zoo/registry.yaml")
    site = _installed_elsewhere(monkeypatch, tmp_path, [PackagePath("zoo/__init__.py"), rel])
    target = (site / rel).resolve()
    target.parent.mkdir(parents=True)
    target.write_text((ROOT / "registry.yaml").read_text())
    assert "gru-resnet50-coco" in zoo.list_models()
    assert [p.resolve() for p, _ in zoo.get_registry().recipe_files] == [target]


def test_missing_catalogue_is_reported_not_empty(fresh_registry, monkeypatch, tmp_path):
    _installed_elsewhere(monkeypatch, tmp_path, [])
    with pytest.warns(UserWarning, match="registry.yaml was not found"):
        reg = zoo.get_registry()
    why = reg.failed_plugins["recipes"]
    assert "registry.yaml was not found" in why
    assert str(tmp_path / "venv" / "share" / "caption-zoo" / "registry.yaml") in why  # where it looked
    assert "installed caption-zoo distribution" in why
    assert zoo.list_models() == [] and "gru" in reg.names("decoders")
    with pytest.raises(RecipeError, match="registry.yaml was not found"):
        zoo.create_model("gru-resnet50-coco")


# -- pretrained encoders: a recipe says so, training honours it, the command line overrides it -------------
def test_coco_recipes_train_from_imagenet_weights():
    """Every COCO recipe promises an ImageNet backbone (descriptions, docs/coco.md); the toy one does not."""
    from zoo.registry.recipes import load_recipes
    from zoo.training.runs import RunSpec

    recipes = load_recipes()
    coco = [n for n, r in recipes.items() if r.data["name"].startswith("coco")]
    assert len(coco) >= 5
    for name in coco:
        assert RunSpec.from_recipe(name).pretrained is True, name
    assert RunSpec.from_recipe("gru-resnet10t-shapes").pretrained is False


def _train_args(*argv: str):
    from zoo.cli import build_parser
    from zoo.commands.train import spec_from_args

    return spec_from_args(build_parser().parse_args(["train", *argv]))


def test_command_line_overrides_the_recipes_pretrained():
    assert _train_args("gru-attn-resnet50-coco").pretrained is True
    assert _train_args("gru-attn-resnet50-coco", "--no-pretrained").pretrained is False
    assert _train_args("gru-attn-resnet50-coco", "--pretrained", "w.safetensors").pretrained == "w.safetensors"
    assert _train_args("gru-resnet10t-shapes", "--pretrained").pretrained is True
    assert _train_args("--encoder", "resnet10t", "--decoder", "gru", "--tokenizer", "word").pretrained is False


def test_training_a_pretrained_recipe_starts_from_the_weight_sources_weights(fresh_registry, tmp_path):
    """What `zoo train RECIPE` builds: with `pretrained: true` the encoder holds the weight source's
    weights (not a random initialisation); with --no-pretrained it does not."""
    import types

    import timm
    import torch

    from zoo.training.runs import RunSpec, build_model, load_split

    torch.manual_seed(7)
    served = timm.create_model("resnet10t", num_classes=0).state_dict()
    recipes = tmp_path / "recipes.yaml"
    recipes.write_text(
        "models:\n  pretrained-toy:\n    encoder: {name: resnet10t, kwargs: {img_size: 32, freeze: true}}\n"
        "    pretrained: true\n    decoder: {name: gru, kwargs: {embed_size: 8, hidden_size: 8}}\n"
        "    tokenizer: {name: word, kwargs: {min_count: 0}}\n"
        "    data: {name: shapes, num_train: 4, num_val: 2, num_test: 2, image_size: 32}\n"
        "    train: {steps: 2}\n"
    )
    plugin = types.ModuleType("pretrained_toy_plugin")

    def zoo_register(registry):
        registry.add_recipes(recipes)

    def zoo_pretrained_weights(encoder_name):
        return dict(served) if encoder_name == "resnet10t" else None

    plugin.zoo_register = zoo.hookimpl(zoo_register)
    plugin.zoo_pretrained_weights = zoo.hookimpl(tryfirst=True)(zoo_pretrained_weights)
    zoo.load_plugin(plugin, name="toy-weights")

    spec = RunSpec.from_recipe("pretrained-toy")
    model = build_model(spec, load_split(spec, "train"))
    state = model.encoder.model.state_dict()
    assert all(torch.equal(v, served[k]) for k, v in state.items())
    spec.pretrained = False  # --no-pretrained
    random_init = build_model(spec, load_split(spec, "train")).encoder.model.state_dict()
    assert not all(torch.equal(v, served[k]) for k, v in random_init.items())
    # the Python front door reads the recipe the same way; pretrained=False still overrides it
    from_api = zoo.create_model("pretrained-toy", captions=["a red circle"])
    assert all(torch.equal(v, served[k]) for k, v in from_api.encoder.model.state_dict().items())
    plain = zoo.create_model("pretrained-toy", captions=["a red circle"], pretrained=False)
    assert not all(torch.equal(v, served[k]) for k, v in plain.encoder.model.state_dict().items())
