"""registry.yaml: the catalogue loads, and bad entries are reported with the recipe and the key."""

from __future__ import annotations

import pytest

import zoo
from zoo.errors import RecipeError
from zoo.recipes import parse_file

from .helpers import tiny_tokenizer


def test_catalogue_has_the_four_decoders_on_coco():
    names = zoo.list_models()
    assert "gru-resnet50-coco" in names
    from zoo.recipes import load_recipes

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
