"""``create_model``: the single front door, by recipe name or by parts (as timm's ``create_model``)."""

from __future__ import annotations

import copy
import fnmatch
import re
from typing import Any, Callable, Iterable

from zoo.contracts.probe import check_decoder_contract
from zoo.errors import RecipeError, ZooError
from zoo.registry.manager import get_registry
from zoo.models.caption_model import CaptionModel
from zoo.registry.options import check_option_values
from zoo.contracts.tokenizer import Tokenizer

__all__ = [
    "create_model",
    "create_encoder",
    "create_decoder",
    "create_tokenizer",
    "tokenizer_from_bytes",
    "list_models",
    "list_names",
]


def list_names(kind: str, pattern: str | Iterable[str] = "*") -> list[str]:
    """Registered names of a kind ('decoders', 'encoders', ...) matching fnmatch pattern(s)."""
    if kind in ("model", "models", "recipe", "recipes"):
        return list_models(pattern)
    return get_registry().names(kind, pattern)


def list_models(pattern: str | Iterable[str] = "*") -> list[str]:
    """Recipe names from registry.yaml (and plugins' recipe files) matching fnmatch pattern(s)."""
    from zoo.registry.recipes import load_recipes

    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    return sorted(n for n in load_recipes() if any(fnmatch.fnmatchcase(n, p) for p in patterns))


def create_encoder(name: str, **kwargs: Any) -> Any:
    entry = get_registry().get("encoder", name)
    return _build(entry, kwargs, lambda: get_registry().create("encoder", name, **kwargs))


def create_decoder(name: str, vocab_size: int, feature_dim: int, **kwargs: Any) -> Any:
    """Build decoder ``name`` and check it keeps the decoder contract (``zoo.contracts.probe``: a tiny probe
    batch, no gradient, RNG untouched) and that its options are plain JSON, so a plugin's mistake is a
    ContractError naming it here rather than a failure after training or decoding."""
    entry = get_registry().get("decoder", name)
    check_option_values("decoder", entry.name, entry.plugin, kwargs)
    dec = _build(entry, kwargs, lambda: entry.factory(vocab_size=vocab_size, feature_dim=feature_dim, **kwargs))
    check_decoder_contract(dec, f"{entry.name!r} (plugin {entry.plugin!r}, {type(dec).__module__}.{type(dec).__qualname__})")
    return dec


def create_tokenizer(name: str, captions: Iterable[str], **kwargs: Any) -> Tokenizer:
    """Train tokenizer ``name`` on ``captions``."""
    entry = get_registry().get("tokenizer", name)
    return _build(entry, kwargs, lambda: entry.factory.train(captions, **kwargs))


_UNEXPECTED = re.compile(r"^(?P<callee>[\w.<>]+)\(\) got an unexpected keyword argument '(?P<option>\w+)'")


def _build(entry: Any, kwargs: dict[str, Any], make: Callable[[], Any]) -> Any:
    """``make()``, with every option of ``kwargs`` checked first against the part's options as ``zoo info``
    lists them, so a typo in any part of any plugin reads like a ``train.*`` one: ``unknown option
    decoder.hiden_size; did you mean hidden_size? ...``. A factory that takes ``**kwargs`` (timm's encoders
    pass them on to the backbone) cannot be checked beforehand; when what it calls rejects one of them
    (Python's "got an unexpected keyword argument"), that is reported the same way, with the options of
    the part and those of the callee that refused it."""
    from zoo.registry.recipes import check_kwargs, unknown_option

    check_kwargs("", entry.kind, entry, kwargs, ZooError, prefix=entry.kind)
    try:
        return make()
    except (TypeError, ZooError) as exc:
        found = _rejected_option(exc, kwargs)
        if found is None:
            if isinstance(exc, ZooError):
                raise
            raise ZooError(f"{entry.kind} {entry.name!r}: {exc}") from exc
        option, callee_options = found
        own, required = entry.user_options()
        valid = sorted({*own, *required, *callee_options} - {option})
        raise ZooError(unknown_option(entry, option, valid, entry.kind)) from exc


def _rejected_option(exc: BaseException, kwargs: dict[str, Any]) -> tuple[str, list[str]] | None:
    """``(option, the keyword options of the callable that refused it)`` when ``exc`` (or what caused it)
    is Python's "X() got an unexpected keyword argument 'option'" for one of ``kwargs``; else None. The
    callable is looked up by its qualified name among the locals of the frames it was called from."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        match = _UNEXPECTED.match(str(current)) if isinstance(current, TypeError) else None
        if match and match["option"] in kwargs:
            return match["option"], _callee_options(current, match["callee"])
        current = current.__cause__ or current.__context__
    return None


def _callee_options(exc: BaseException, callee: str) -> list[str]:
    import inspect

    owner, _, method = callee.rpartition(".")
    tb = exc.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if getattr(value, "__qualname__", None) not in (callee, owner):
                continue
            target = getattr(value, method, None) if owner and method == "__init__" else value
            try:
                params = inspect.signature(target).parameters.values()  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
            return [p.name for p in params if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        tb = tb.tb_next
    return []


def tokenizer_from_bytes(name: str, data: bytes) -> Tokenizer:
    return get_registry().get("tokenizer", name).factory.from_bytes(data)


def registered_tokenizer_name(tokenizer: Tokenizer) -> str:
    """The registry name under which ``tokenizer``'s class is registered: the name written into configs and
    checkpoints, so ``zoo.load`` can find the class again.

    The class's ``name`` attribute wins when it is registered for that class; otherwise the registry is
    searched for the class itself. A tokenizer whose class is not registered could be saved but never
    loaded, so that is an error here, at model creation, rather than at ``zoo.load`` time."""
    reg = get_registry()
    cls = type(tokenizer)
    own = getattr(tokenizer, "name", "") or ""
    if own and ("tokenizer", own) in reg and reg.get("tokenizer", own).factory is cls:
        return reg.get("tokenizer", own).name
    found = [n for n in reg.names("tokenizer") if reg.get("tokenizer", n).factory is cls]
    if found:  # registered under several names (aliases): any of them rebuilds it; take the first, sorted
        return found[0]
    if own and ("tokenizer", own) in reg:
        factory = reg.get("tokenizer", own).factory
        if not isinstance(factory, type) or issubclass(cls, factory):
            # a subclass of a registered tokenizer that names the registered class able to rebuild it
            return reg.get("tokenizer", own).name
    module = cls.__module__
    raise ZooError(
        f"tokenizer {cls.__qualname__} (from {module}) is not registered"
        + (f" (its name {own!r} is not registered for it or a class it derives from)" if own else "")
        + ", so a checkpoint of this model could never be loaded again. Register it in a plugin: "
        f"`registry.add_tokenizer('my-tokenizer', {cls.__name__})` in its zoo_register hook, then load the "
        f"plugin (zoo.load_plugin or an entry point in the 'zoo' group). Registered tokenizers: "
        f"{', '.join(reg.names('tokenizer')) or 'none'}."
    )


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
        from zoo.registry.recipes import get_recipe

        r = get_recipe(recipe)
        if r.weights is not None and tokenizer is None and encoder is None and decoder is None:
            from zoo.models.checkpoint import load_from_recipe

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
