"""Building one part by its registered name: an encoder, a decoder (probed against the decoder contract
where it is built), a tokenizer (trained, or rebuilt from a checkpoint's bytes). Options a part does not
take are refused naming the option and its close matches. Both ``create_model`` and ``zoo.load`` build
through here (as timm's ``_builder.py`` serves its ``create_model``)."""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Iterable

import torch

from zoo.contracts.probe import check_decoder_contract
from zoo.contracts.tokenizer import Tokenizer
from zoo.errors import PluginError, ZooError
from zoo.registry.manager import describe_failure, get_registry
from zoo.registry.options import check_option_values
from zoo.registry.recipes import check_kwargs, unknown_option


def create_encoder(name: str, **kwargs: Any) -> Any:
    entry = get_registry().get("encoder", name)
    return _build(entry, kwargs, lambda: get_registry().create("encoder", name, **kwargs))


def create_decoder(name: str, vocab_size: int, feature_dim: int, **kwargs: Any) -> Any:
    """Build decoder ``name`` and check it keeps the decoder contract (``zoo.contracts.probe``: a tiny probe
    batch, no gradient, RNG untouched) and that its options are plain JSON, so a plugin's mistake is a
    ContractError naming it here rather than a failure after training or decoding."""
    entry = get_registry().get("decoder", name)
    dec = _build_decoder(entry, vocab_size, feature_dim, kwargs)
    check_decoder_contract(dec, f"{entry.name!r} (plugin {entry.plugin!r}, {type(dec).__module__}.{type(dec).__qualname__})")
    return dec


def _build_decoder(entry: Any, vocab_size: int, feature_dim: int, kwargs: dict[str, Any]) -> Any:
    check_option_values("decoder", entry.name, entry.plugin, kwargs)
    return _build(entry, kwargs, lambda: entry.factory(vocab_size=vocab_size, feature_dim=feature_dim, **kwargs))


def build_on_meta(kind: str, name: str, kwargs: dict[str, Any], vocab_size: int = 0, feature_dim: int = 0) -> Any:
    """Encoder or decoder ``name`` built on PyTorch's meta device: its tensors have shapes but no memory
    and no values, so a config that implies terabytes (``hidden_size`` 10^7) is measured, not allocated
    (``zoo.load`` compares it with the checkpoint's tensors before building for real). The decoder is not
    probed (the probe needs values).

    Unknown names and options raise as ``create_encoder``/``create_decoder`` do. None when the plugin's
    constructor cannot run on the meta device (it reads values out of tensors it makes): then nothing can
    be measured beforehand."""
    entry = get_registry().get(kind, name)
    try:
        with torch.device("meta"):
            if kind == "decoder":
                return _build_decoder(entry, vocab_size, feature_dim, kwargs)
            return _build(entry, kwargs, lambda: get_registry().create(kind, name, **kwargs))
    except PluginError:  # the constructor raised (perhaps only on the meta device); the real build will say
        return None
    except ZooError as exc:
        if _meta_device_failure(exc):
            return None
        raise
    except Exception:  # noqa: BLE001 - a constructor that needs real tensors; the real build reports its errors
        return None


def _meta_device_failure(exc: BaseException) -> bool:
    """True when ``exc`` (a ZooError wrapping what a constructor raised) comes from the meta device itself
    (a tensor's value read on a device that holds none), not from a bad name or option."""
    current: BaseException | None = exc
    while current is not None:
        if "meta" in str(current).lower() and not isinstance(current, ZooError):
            return True
        current = current.__cause__
    return False


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
    check_kwargs("", entry.kind, entry, kwargs, ZooError, prefix=entry.kind)
    try:
        return make()
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - the factory is the plugin's code: whatever it raises names it
        found = _rejected_option(exc, kwargs) if isinstance(exc, (TypeError, ZooError)) else None
        if found is None:
            if isinstance(exc, ZooError) or type(exc).__name__ == "OutOfMemoryError":
                raise
            raise PluginError(
                f"{entry.kind} {entry.name!r} (plugin {entry.plugin!r}) could not be built with options {kwargs}: "
                f"{describe_failure(exc, 'building it')}"
            ) from exc
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
