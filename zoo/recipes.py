"""The zoo catalogue: recipes from ``registry.yaml`` (and recipe files that plugins add).

A recipe names an encoder, a decoder and a tokenizer with their options, training settings, and (once
trained) weights with sha256 and the scores reported for them. Entries are validated on load: a bad one
is reported with the file, the recipe name and the offending key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import RecipeError

RECIPE_KEYS = {
    "description",
    "encoder",
    "decoder",
    "tokenizer",
    "train",
    "data",
    "weights",
    "scores",
}
PART_KEYS = {"name", "kwargs"}
WEIGHT_KEYS = {"url", "sha256"}


@dataclass
class Recipe:
    name: str
    encoder: str
    decoder: str
    tokenizer: str
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    decoder_kwargs: dict[str, Any] = field(default_factory=dict)
    tokenizer_kwargs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, str] | None = None
    scores: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "encoder": {"name": self.encoder, "kwargs": self.encoder_kwargs},
            "decoder": {"name": self.decoder, "kwargs": self.decoder_kwargs},
            "tokenizer": {"name": self.tokenizer, "kwargs": self.tokenizer_kwargs},
            "train": self.train,
            "data": self.data,
            "weights": self.weights,
            "scores": self.scores,
        }


def _part(where: str, value: Any, key: str) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        return value, {}
    if not isinstance(value, dict) or "name" not in value:
        raise RecipeError(f"{where}: key {key!r} must be a name or a mapping with 'name' (and 'kwargs')")
    extra = set(value) - PART_KEYS
    if extra:
        raise RecipeError(f"{where}: key {key}.{sorted(extra)[0]!r} is not allowed (only name, kwargs)")
    kwargs = value.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise RecipeError(f"{where}: key {key}.kwargs must be a mapping")
    return str(value["name"]), dict(kwargs)


def parse_recipe(name: str, body: Any, source: str, check_names: bool = True) -> Recipe:
    where = f"{source}: recipe {name!r}"
    if not isinstance(body, dict):
        raise RecipeError(f"{where} must be a mapping of keys, got {type(body).__name__}")
    unknown = set(body) - RECIPE_KEYS
    if unknown:
        raise RecipeError(f"{where}: unknown key {sorted(unknown)[0]!r}; allowed keys are {sorted(RECIPE_KEYS)}")
    for key in ("encoder", "decoder", "tokenizer"):
        if key not in body:
            raise RecipeError(f"{where}: missing key {key!r}")
    enc, enc_kw = _part(where, body["encoder"], "encoder")
    dec, dec_kw = _part(where, body["decoder"], "decoder")
    tok, tok_kw = _part(where, body["tokenizer"], "tokenizer")
    weights = body.get("weights")
    if weights is not None:
        if not isinstance(weights, dict) or set(weights) - WEIGHT_KEYS or not WEIGHT_KEYS <= set(weights):
            raise RecipeError(f"{where}: key 'weights' must have exactly 'url' and 'sha256'")
        sha = str(weights["sha256"])
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower()):
            raise RecipeError(f"{where}: key 'weights.sha256' must be 64 hex digits, got {sha!r}")
    for key in ("train", "data"):
        if key in body and not isinstance(body[key], dict):
            raise RecipeError(f"{where}: key {key!r} must be a mapping")
    scores = body.get("scores") or []
    if not isinstance(scores, list):
        raise RecipeError(f"{where}: key 'scores' must be a list of mappings")
    if check_names:
        from zoo.errors import UnknownNameError
        from zoo.manager import get_registry

        reg = get_registry()
        for kind, value in (("encoder", enc), ("decoder", dec), ("tokenizer", tok)):
            try:
                reg.get(kind, value)
            except UnknownNameError as exc:
                raise RecipeError(f"{where}: key {kind!r}: {exc}") from exc
    return Recipe(
        name=name,
        encoder=enc,
        decoder=dec,
        tokenizer=tok,
        encoder_kwargs=enc_kw,
        decoder_kwargs=dec_kw,
        tokenizer_kwargs=tok_kw,
        train=dict(body.get("train") or {}),
        data=dict(body.get("data") or {}),
        weights=dict(weights) if weights else None,
        scores=list(scores),
        description=str(body.get("description", "")),
        source=source,
    )


def parse_file(path: str | Path, check_names: bool = True) -> dict[str, Recipe]:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise RecipeError(f"recipe file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path} is not valid YAML: {exc}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict) or not isinstance(doc.get("models", None), dict):
        raise RecipeError(f"{path}: expected a top-level 'models:' mapping of recipe name → recipe")
    out = {}
    for name, body in doc["models"].items():
        if not isinstance(name, str) or name != name.lower() or " " in name:
            raise RecipeError(f"{path}: recipe name {name!r} must be lower-case, without spaces")
        out[name] = parse_recipe(name, body, str(path), check_names=check_names)
    return out


def load_recipes() -> dict[str, Recipe]:
    """All recipes from every plugin's recipe files; a name given twice names both files."""
    from zoo.manager import get_registry

    recipes: dict[str, Recipe] = {}
    for path, plugin in get_registry().recipe_files:
        for name, r in parse_file(path).items():
            if name in recipes:
                raise RecipeError(
                    f"recipe {name!r} is defined twice: in {recipes[name].source} and in {path} "
                    f"(plugin {plugin!r}); rename one."
                )
            recipes[name] = r
    return recipes


def get_recipe(name: str) -> Recipe:
    import difflib

    recipes = load_recipes()
    if name not in recipes:
        close = difflib.get_close_matches(name, list(recipes), n=5, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise RecipeError(f"unknown model recipe {name!r}.{hint} See `zoo list models`.")
    return recipes[name]
