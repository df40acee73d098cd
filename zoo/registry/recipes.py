"""The zoo catalogue: recipes from ``registry.yaml`` (and recipe files that plugins add).

A recipe names an encoder, a decoder and a tokenizer with their options, training settings, and (once
trained) weights with sha256 and the scores reported for them. Entries are validated on load: a bad one
is reported with the file, the recipe name, the offending key and the closest valid value. Names and
options are checked against the registry: the encoder (with its pretrained tag, if any), decoder and
tokenizer, their ``kwargs`` (the options ``zoo info`` lists), and ``data.name``, which every recipe needs
(the data set it trains on: nothing is assumed). ``scores`` is a list of mappings, each with the metrics
as numbers (×100) beside ``data``, ``split``, ``references_hash`` (strings) and ``decoding`` (a mapping).
``pretrained: true`` (default false) starts the encoder from its ImageNet weights (the first weight source
that has them) when the recipe is trained; ``zoo train --pretrained/--no-pretrained`` overrides it.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import RecipeError, UnknownNameError
from zoo.files import missing_reason
from zoo.registry.manager import get_registry

RECIPE_KEYS = {
    "description",
    "encoder",
    "pretrained",
    "decoder",
    "tokenizer",
    "train",
    "data",
    "weights",
    "scores",
}
PART_KEYS = {"name", "kwargs"}
WEIGHT_KEYS = {"url", "sha256"}
# in a ``scores:`` entry, what the numbers were measured with; every other key is a metric (a number, ×100)
SCORE_CONTEXT_KEYS: dict[str, type] = {"data": str, "split": str, "references_hash": str, "decoding": dict}


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
    pretrained: bool = False  # train from the encoder's ImageNet weights (a weight source's)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "encoder": {"name": self.encoder, "kwargs": self.encoder_kwargs},
            "pretrained": self.pretrained,
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


def _closest(value: str, candidates: list[str], n: int = 3) -> str:
    close = difflib.get_close_matches(value, candidates, n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_weights(where: str, weights: Any) -> None:
    if not isinstance(weights, dict) or set(weights) - WEIGHT_KEYS or not WEIGHT_KEYS <= set(weights):
        keys = sorted(weights) if isinstance(weights, dict) else type(weights).__name__
        raise RecipeError(
            f"{where}: key 'weights' must have exactly 'url' and 'sha256', got {keys}; e.g. "
            f"weights: {{url: https://host/model.safetensors, sha256: <64 hex digits>}}"
        )
    url = weights["url"]
    if not isinstance(url, str) or not url.strip():
        raise RecipeError(
            f"{where}: key 'weights.url' must be a string (a URL or a local path), got "
            f"{type(url).__name__} {url!r}; e.g. url: https://host/model.safetensors"
        )
    sha = weights["sha256"]
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower()):
        raise RecipeError(
            f"{where}: key 'weights.sha256' must be 64 hex digits (a string), got {sha!r}; compute it with "
            f"`sha256sum FILE`"
        )


def _check_scores(where: str, scores: Any) -> list[dict[str, Any]]:
    example = "e.g. {data: coco-karpathy, split: test, decoding: {beam_size: 3}, BLEU-4: 30.1, CIDEr-D: 95.6}"
    if not isinstance(scores, list):
        raise RecipeError(f"{where}: key 'scores' must be a list of mappings, {example}; got {type(scores).__name__}")
    for i, entry in enumerate(scores):
        key = f"scores[{i}]"
        if not isinstance(entry, dict):
            raise RecipeError(
                f"{where}: key {key!r} must be a mapping of metric → number (×100) with the data set, split "
                f"and decoding settings it was measured with, {example}; got {type(entry).__name__} {entry!r}"
            )
        for k, v in entry.items():
            if not isinstance(k, str):
                raise RecipeError(f"{where}: key '{key}.{k}' must be a name (a string), {example}")
            expected = SCORE_CONTEXT_KEYS.get(k)
            if expected is not None:
                if not isinstance(v, expected):
                    raise RecipeError(
                        f"{where}: key '{key}.{k}' must be a {'mapping' if expected is dict else 'string'}, "
                        f"got {type(v).__name__} {v!r}; {example}"
                    )
            elif not _is_number(v):
                hint = _closest(k, sorted(SCORE_CONTEXT_KEYS))
                raise RecipeError(
                    f"{where}: key '{key}.{k}' must be a number (a metric score, ×100), got "
                    f"{type(v).__name__} {v!r}.{hint} Descriptive keys are {', '.join(sorted(SCORE_CONTEXT_KEYS))}."
                )
    return scores


def check_kwargs(
    where: str, key: str, entry: Any, kwargs: dict[str, Any], error: type = RecipeError, prefix: str | None = None
) -> None:
    """Option names against the registered factory's options, exactly as ``zoo info`` lists them. An
    unknown one is named ``{prefix}.{option}`` (default ``{key}.kwargs``). ``zoo compare`` uses it too, to
    check its shared ``--set`` options before training (``error=ZooError``, ``prefix=key``), and so does
    ``zoo.models.factory`` for every part it builds (``where=""``)."""
    prefix = f"{key}.kwargs" if prefix is None else prefix
    if not kwargs or entry.accepts_any_option():
        return
    options, required = entry.user_options()
    valid = sorted([*required, *options])
    for option in kwargs:
        if option not in valid:
            text = unknown_option(entry, str(option), valid, prefix)
            raise error(f"{where}: {text}" if where else text)


def unknown_option(entry: Any, option: str, valid: list[str], prefix: str) -> str:
    """The one wording for an option a part does not take, as ``train.*`` keys are reported: ``unknown
    option decoder.hiden_size; did you mean hidden_size? decoder 'gru' takes: ...``."""
    close = difflib.get_close_matches(option, valid, n=2, cutoff=0.75)
    hint = f"; did you mean {' or '.join(close)}?" if close else "."
    return (
        f"unknown option {prefix}.{option}{hint} {entry.kind} {entry.name!r} takes: "
        f"{', '.join(valid) or 'no options'} (see `zoo info {entry.name}`)."
    )


def _check_encoder_tag(where: str, reg: Any, name: str) -> None:
    """``arch.tag``: a family that lists pretrained tags (timm lists ``timm.list_pretrained()``) must list
    this one; ``timm.is_model`` alone ignores the tag."""
    entry = reg.get("encoder", name)
    if entry.family is None or "." not in name:
        return
    family = next((f for f in reg.families() if f.name == entry.family), None)
    if family is None:
        return
    names = family.names()
    if name in names:
        return
    tagged = [n for n in names if "." in n]
    if not tagged:
        return  # this family does not enumerate tags: nothing to check against
    arch, tag = name.split(".", 1)
    same_arch = [n for n in tagged if n.startswith(arch + ".")]
    hint = _closest(name, same_arch or tagged, n=5)
    if not hint and same_arch:
        hint = f" Its tags: {', '.join(same_arch[:8])}{', ...' if len(same_arch) > 8 else ''}."
    if not same_arch:
        hint += f" {arch!r} has no pretrained tags; use {arch!r} alone for random weights."
    raise RecipeError(
        f"{where}: key 'encoder': {arch!r} has no pretrained tag {tag!r}.{hint} See `zoo list encoders "
        f"'{arch}.*'`."
    )


def parse_recipe(name: str, body: Any, source: str, check_names: bool = True) -> Recipe:
    """One recipe, validated. ``check_names`` also checks every name and option against the registry:
    the encoder (and its pretrained tag), decoder, tokenizer, their kwargs, the data set."""
    where = f"{source}: recipe {name!r}"
    if not isinstance(body, dict):
        raise RecipeError(f"{where} must be a mapping of keys, got {type(body).__name__}")
    unknown = set(body) - RECIPE_KEYS
    if unknown:
        bad = sorted(unknown)[0]
        raise RecipeError(
            f"{where}: unknown key {bad!r}.{_closest(str(bad), sorted(RECIPE_KEYS))} Allowed keys are "
            f"{sorted(RECIPE_KEYS)}"
        )
    for key in ("encoder", "decoder", "tokenizer"):
        if key not in body:
            raise RecipeError(f"{where}: missing key {key!r}")
    enc, enc_kw = _part(where, body["encoder"], "encoder")
    pretrained = body.get("pretrained", False)
    if not isinstance(pretrained, bool):
        raise RecipeError(
            f"{where}: key 'pretrained' must be true or false (true: the encoder starts from its ImageNet "
            f"weights, from the first weight source that has them), got {type(pretrained).__name__} "
            f"{pretrained!r}; e.g. pretrained: true"
        )
    if "pretrained" in enc_kw:
        raise RecipeError(
            f"{where}: key 'encoder.kwargs.pretrained': say it at the recipe's top level instead, "
            f"`pretrained: true` (or false) beside `encoder:`; `zoo train --pretrained` and `--no-pretrained` "
            f"override that one"
        )
    dec, dec_kw = _part(where, body["decoder"], "decoder")
    tok, tok_kw = _part(where, body["tokenizer"], "tokenizer")
    weights = body.get("weights")
    if weights is not None:
        _check_weights(where, weights)
    for key in ("train", "data"):
        if key in body and not isinstance(body[key], dict):
            raise RecipeError(f"{where}: key {key!r} must be a mapping")
    scores = _check_scores(where, body.get("scores") or [])
    data = dict(body.get("data") or {})
    if check_names:
        reg = get_registry()
        for kind, value, kwargs in (("encoder", enc, enc_kw), ("decoder", dec, dec_kw), ("tokenizer", tok, tok_kw)):
            try:
                entry = reg.get(kind, value)
            except UnknownNameError as exc:
                raise RecipeError(f"{where}: key {kind!r}: {exc}") from exc
            check_kwargs(where, kind, entry, kwargs)
        _check_encoder_tag(where, reg, enc)
    if not isinstance(data.get("name"), str):
        got = "it is missing" if "name" not in data else f"got {data['name']!r}"
        raise RecipeError(
            f"{where}: key 'data.name' must name the data set the recipe trains on ({got}); e.g. "
            f"data: {{name: coco-karpathy}}, or data: {{name: shapes}} for the built-in toy set"
        )
    if check_names:
        datasets = [("data.name", data["name"])]
        datasets += [(f"scores[{i}].data", s["data"]) for i, s in enumerate(scores) if "data" in s]
        for key, value in datasets:
            try:
                reg.get("dataset", value)
            except UnknownNameError as exc:
                raise RecipeError(f"{where}: key {key!r}: {exc}") from exc
    return Recipe(
        name=name,
        encoder=enc,
        decoder=dec,
        tokenizer=tok,
        encoder_kwargs=enc_kw,
        decoder_kwargs=dec_kw,
        tokenizer_kwargs=tok_kw,
        train=dict(body.get("train") or {}),
        data=data,
        weights=dict(weights) if weights else None,
        scores=list(scores),
        description=str(body.get("description", "")),
        source=source,
        pretrained=pretrained,
    )


def parse_file(path: str | Path, check_names: bool = True) -> dict[str, Recipe]:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise RecipeError(f"recipe file {path} does not exist") from exc
    except OSError as exc:  # a symbolic link loop, a folder, a file that cannot be read
        raise RecipeError(f"recipe file {path} {missing_reason(path) or f'cannot be read ({exc.strerror})'}") from exc
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
    """All recipes from every plugin's recipe files. A file that fails validation, or defines a recipe
    name an earlier file already did, is skipped and recorded in ``failed_plugins`` under the plugin that
    added it (naming both plugins for a duplicate); the other files still load."""
    reg = get_registry()
    recipes: dict[str, Recipe] = {}
    owners: dict[str, str] = {}
    for path, plugin in list(reg.recipe_files):
        try:
            parsed = parse_file(path)
            for name in parsed:
                if name in recipes:
                    raise RecipeError(
                        f"recipe {name!r} is defined twice: in {recipes[name].source} (plugin "
                        f"{owners[name]!r}) and in {path} (plugin {plugin!r}); rename one."
                    )
        except RecipeError as exc:
            reg.failed_plugins[plugin] = f"RecipeError: {exc} (recipe file {path}, skipped)"
            warnings.warn(f"zoo plugin {plugin!r}: recipe file {path} was skipped: {exc}", stacklevel=2)
            continue
        for name, recipe in parsed.items():
            recipes[name] = recipe
            owners[name] = plugin
    return recipes


def get_recipe(name: str) -> Recipe:
    recipes = load_recipes()
    if name not in recipes:
        close = difflib.get_close_matches(name, list(recipes), n=5, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        failed = get_registry().failed_plugins
        if failed:
            hint += " Plugins that failed to load: " + "; ".join(
                f"{p} ({e.splitlines()[0] if e else 'error'})" for p, e in failed.items()
            )
        raise RecipeError(f"unknown model recipe {name!r}.{hint} See `zoo list models`.")
    return recipes[name]
