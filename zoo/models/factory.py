"""``create_model``: the single front door, by recipe name or by parts (as timm's ``create_model``); and the
names it takes (``list_models`` for recipes, ``list_names`` for any kind of part)."""

from __future__ import annotations

import copy
import fnmatch
from typing import Any, Iterable

from zoo.contracts.tokenizer import Tokenizer
from zoo.errors import RecipeError, ZooError
from zoo.models.builder import (
    create_decoder,
    create_encoder,
    create_tokenizer,
    registered_tokenizer_name,
)
from zoo.models.caption_model import CaptionModel
from zoo.models.hub import load_from_recipe
from zoo.registry.manager import get_registry
from zoo.registry.options import check_option_values
from zoo.registry.recipes import get_recipe, load_recipes

__all__ = ["create_model", "list_models", "list_names"]


def list_names(kind: str, pattern: str | Iterable[str] = "*") -> list[str]:
    """Registered names of a kind ('decoders', 'encoders', ...) matching fnmatch pattern(s)."""
    if kind in ("model", "models", "recipe", "recipes"):
        return list_models(pattern)
    return get_registry().names(kind, pattern)


def list_models(pattern: str | Iterable[str] = "*") -> list[str]:
    """Recipe names from registry.yaml (and plugins' recipe files) matching fnmatch pattern(s)."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    return sorted(n for n in load_recipes() if any(fnmatch.fnmatchcase(n, p) for p in patterns))


def create_model(
    recipe: str | None = None,
    *,
    encoder: str | None = None,
    decoder: str | None = None,
    tokenizer: Tokenizer | str | None = None,
    pretrained: bool | str | None = None,
    encoder_kwargs: dict[str, Any] | None = None,
    decoder_kwargs: dict[str, Any] | None = None,
    tokenizer_kwargs: dict[str, Any] | None = None,
    captions: Iterable[str] | None = None,
    **kwargs: Any,
) -> CaptionModel:
    """Build a captioner.

    * ``create_model("gru-resnet50-coco")``: a recipe from registry.yaml. If the recipe lists trained
      weights they are downloaded (sha256-checked) and loaded; ``pretrained`` then means the encoder.
    * ``create_model(encoder="resnet10t", decoder="gru-attn", tokenizer=tok)``: by parts. ``tokenizer`` is
      a trained ``Tokenizer``, or a name plus ``captions=`` to train it on.
    * ``pretrained``: the encoder's ImageNet weights (True: the first weight source that has them; a path:
      that file; None: what the recipe says, and no weights when building by parts). Extra ``**kwargs`` go
      to the decoder (e.g. ``hidden_size=512``).
    """
    enc_kw = dict(encoder_kwargs or {})
    dec_kw = dict(decoder_kwargs or {})
    tok_kw = dict(tokenizer_kwargs or {})
    dec_kw.update(kwargs)
    if recipe is not None:
        r = get_recipe(recipe)
        if r.weights is not None and tokenizer is None and encoder is None and decoder is None:
            return load_from_recipe(r)
        encoder = encoder or r.encoder
        decoder = decoder or r.decoder
        if pretrained is None:
            pretrained = r.pretrained
        enc_kw = {**r.encoder_kwargs, **enc_kw}
        dec_kw = {**r.decoder_kwargs, **dec_kw}
        tok_kw = {**r.tokenizer_kwargs, **tok_kw}
        if tokenizer is None:
            if captions is None:
                raise RecipeError(
                    f"recipe {recipe!r} has no trained weights yet, so it has no vocabulary: pass a trained "
                    f"tokenizer (tokenizer=...) or captions=... to train its {r.tokenizer!r} tokenizer, or "
                    f"train the recipe with `zoo train {recipe}`."
                )
            tokenizer = r.tokenizer
    if encoder is None or decoder is None or tokenizer is None:
        raise ZooError("create_model needs a recipe name, or encoder=, decoder= and tokenizer=")
    reg = get_registry()
    reg.get("encoder", encoder)  # unknown names fail here, before any tokenizer training
    reg.get("decoder", decoder)
    if isinstance(tokenizer, str):
        if captions is None:
            raise ZooError(f"tokenizer {tokenizer!r} given by name: pass captions=... to train it on")
        tokenizer = create_tokenizer(tokenizer, captions, **tok_kw)
    if pretrained is None:
        pretrained = False
    if "pretrained" not in enc_kw:
        enc_kw["pretrained"] = pretrained
    enc = create_encoder(encoder, **enc_kw)
    dec = create_decoder(decoder, tokenizer.vocab_size, enc.feature_dim, **dec_kw)
    tok_name = registered_tokenizer_name(tokenizer)
    for kind, name, values in (("encoder", encoder, enc.config()), ("tokenizer", tok_name, tokenizer.options())):
        check_option_values(kind, name, reg.get(kind, name).plugin, values)
    config = {
        "recipe": recipe,
        "encoder": {"name": encoder, "kwargs": {**enc.config(), "pretrained": False}},
        "decoder": {"name": decoder, "kwargs": copy.deepcopy(dec_kw)},
        "tokenizer": {"name": tok_name, "kwargs": tokenizer.options()},
        "pretrained": pretrained if isinstance(pretrained, bool) else str(pretrained),
    }
    return CaptionModel(enc, dec, tokenizer, config)
