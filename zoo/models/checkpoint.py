"""One-file checkpoints: ``.safetensors`` with the config, tokenizer and zoo version in the metadata.

Never pickle: safetensors holds only tensors; everything else is JSON or base64 text in its header, so a
checkpoint can be inspected without running code from it. Writes are atomic (temp file + rename), so a
crash never leaves half a checkpoint behind under the real name.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_model, save_model

from zoo.errors import CheckpointError, UnknownNameError, ZooError
from zoo.files import atomic_write, missing_reason
from zoo.models.builder import build_on_meta, create_decoder, create_encoder, tokenizer_from_bytes
from zoo.models.caption_model import CaptionModel
from zoo.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from zoo.models.caption_model import CaptionModel

FORMAT_NAME = "caption-zoo"
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024


def save(model: "CaptionModel", path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to one ``.safetensors`` file; ``extra`` (JSON) goes into the metadata too
    (scores, training state)."""
    meta = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "zoo_version": __version__,
        "config": json.dumps(model.config, sort_keys=True),
        "tokenizer": base64.b64encode(model.tokenizer.to_bytes()).decode("ascii"),
    }
    if extra:
        meta["extra"] = json.dumps(extra, sort_keys=True)
    def write(tmp: str) -> None:
        save_model(model, tmp, metadata=meta)  # save_model handles shared (tied) tensors

    return atomic_write(path, write)


def _training_state_error(path: Path) -> CheckpointError:
    """``zoo train`` writes, next to its checkpoints, the state it resumes from (weights with optimiser
    state, random states and progress; ``progress`` and ``optim`` metadata, no format tag). Handed to a
    loader it is not foreign: say what it is and which model files to use instead."""
    folder = path.parent
    found = [folder / n for n in ("best.safetensors", "last.safetensors") if (folder / n).is_file()]
    use = (
        f"use the model checkpoint{'s' if len(found) > 1 else ''} of that run: "
        f"{' or '.join(str(f) for f in found)} (or the run folder {folder} itself)"
        if found
        else f"its model checkpoints, best.safetensors and last.safetensors, are not in {folder} (yet); they "
        f"are written when the run validates and when it ends"
    )
    return CheckpointError(
        f"{path} is the resumable training state of a run (weights with optimiser state and progress, for "
        f"`zoo train --resume {folder}`), not a model checkpoint: {use}."
    )


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors header metadata, with clear errors for missing, truncated or foreign files.
    (``_read_header`` gives the tensors' entries too.)"""
    return _read_header(path)[0]


def _read_header(path: str | Path) -> tuple[dict[str, str], dict[str, Any]]:
    """(metadata, tensor entries by name) of a caption-zoo checkpoint, every part of the header checked.

    Everything in the header is checked here, before any tensor is read or any part built: its shape (an
    object of tensors, each with a dtype, a shape and data_offsets inside the file), metadata values that
    are strings, and ``config`` and ``extra`` that are JSON objects. A command that calls this first fails
    at once, naming the file and the entry, rather than after decoding a split."""
    path = Path(path)
    reason = missing_reason(path)  # a symbolic link loop or a broken link is said as such
    if reason is not None:
        raise CheckpointError(f"checkpoint {path} {reason}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; give the .safetensors file inside it")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"checkpoint {path} is not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or n + 8 > size:
            raise CheckpointError(
                f"checkpoint {path} is not a valid safetensors file, or it is truncated (header claims "
                f"{n} bytes, file has {size}). Re-download or re-save it; a .pt/.pth pickle is not accepted."
            )
        header = _parse_json(fh.read(n), path, "its safetensors header")
    if not isinstance(header, dict):
        raise CheckpointError(
            f"checkpoint {path} has a damaged safetensors header: the header is {_json_kind(header)}, not an "
            f"object of tensors. {_DAMAGED}"
        )
    end = _check_tensors(header, path)
    if 8 + n + end > size:
        raise CheckpointError(
            f"checkpoint {path} is truncated: its tensors need {8 + n + end} bytes but the file has {size}. "
            f"Re-download or re-save it."
        )
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"checkpoint {path} has a damaged safetensors header: its '__metadata__' is {_json_kind(meta)}, "
            f"not an object of strings. {_DAMAGED}"
        )
    for key, value in meta.items():
        if not isinstance(value, str):
            raise CheckpointError(
                f"checkpoint {path} has a damaged safetensors header: metadata entry {key!r} is "
                f"{_json_kind(value)}, not a string (safetensors metadata holds strings only). {_DAMAGED}"
            )
    if meta.get("format") != FORMAT_NAME and {"progress", "optim"} <= set(meta):
        raise _training_state_error(path)
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path} is a safetensors file but not a caption-zoo checkpoint (no 'format: {FORMAT_NAME}' in "
            f"its metadata). To use bare encoder weights, give it as the encoder's weights (`--pretrained PATH`; "
            f"`pretrained=PATH` in Python)."
        )
    raw_version = meta.get("format_version", "0")
    try:
        version = int(raw_version)
    except (TypeError, ValueError):
        raise CheckpointError(
            f"checkpoint {path} has format_version {raw_version!r} ({_written_by(meta)}); this caption-zoo "
            f"({__version__}) knows only whole-number versions up to {FORMAT_VERSION}, so the file comes from "
            f"another or newer release, or its metadata was edited. Upgrade: pip install -U caption-zoo, or "
            f"load it with the caption-zoo version that wrote it and save it again."
        ) from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} uses format version {version}, written by caption-zoo "
            f"{meta.get('zoo_version', '?')}; this caption-zoo ({__version__}) reads up to version "
            f"{FORMAT_VERSION}. Upgrade: pip install -U caption-zoo"
        )
    for key in ("config", "extra"):
        if key in meta:
            _json_object(meta, key, path)
    return meta, {k: v for k, v in header.items() if k != "__metadata__"}


#: bytes per element of the safetensors dtypes (a tensor's shape must fit its data_offsets exactly)
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
                "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_DAMAGED = "The file was edited or damaged: re-download it, or re-save it from the run that trained it."


def _json_kind(value: Any) -> str:
    """``value`` as the JSON its type is, in words: 'a JSON array', 'the number 3', ..."""
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return f"{json.dumps(value)}"
    return f"the number {value!r}" if isinstance(value, (int, float)) else type(value).__name__


def _parse_json(text: bytes | str, path: Path, what: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise CheckpointError(
            f"checkpoint {path}: {what} is nested too deeply to be read (a crafted or damaged file). {_DAMAGED}"
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has a corrupt safetensors header: {what} is not JSON ({exc}). "
                              f"{_DAMAGED}") from exc


def _json_object(meta: dict[str, str], key: str, path: Path) -> dict[str, Any]:
    """Metadata entry ``key`` as the JSON object it must be, or a CheckpointError naming file and entry."""
    try:
        value = json.loads(meta[key])
    except RecursionError:
        raise CheckpointError(
            f"checkpoint {path}: metadata entry {key!r} is nested too deeply to be read. {_upgrade_hint(meta)}"
        ) from None
    except ValueError as exc:
        raise CheckpointError(
            f"checkpoint {path}: metadata entry {key!r} is not valid JSON ({exc}). {_upgrade_hint(meta)}"
        ) from exc
    if not isinstance(value, dict):
        raise CheckpointError(
            f"checkpoint {path}: metadata entry {key!r} is {_json_kind(value)}, not a JSON object. "
            f"{_upgrade_hint(meta)}"
        )
    return value


def _check_tensors(header: dict[str, Any], path: Path) -> int:
    """Every tensor entry has a dtype, a shape of whole numbers and ``data_offsets`` [begin, end] with
    0 <= begin <= end; returns the end of the last one (the data the file must hold)."""
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        problem = None
        if not isinstance(entry, dict):
            problem = f"is {_json_kind(entry)}, not an object with dtype, shape and data_offsets"
        elif not isinstance(entry.get("dtype"), str):
            problem = "has no dtype"
        elif not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            problem = f"has no valid shape (got {shape!r})"
        elif (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
              or not 0 <= offsets[0] <= offsets[1]):
            problem = ("has no data_offsets" if offsets is None else
                       f"has invalid data_offsets {offsets!r} (expected [begin, end], 0 <= begin <= end)")
        elif entry["dtype"] in _DTYPE_BYTES and offsets[1] - offsets[0] != math.prod(shape) * _DTYPE_BYTES[entry["dtype"]]:
            problem = (f"declares shape {shape} of {entry['dtype']} ({math.prod(shape) * _DTYPE_BYTES[entry['dtype']]} "
                       f"bytes) but its data_offsets {offsets} hold {offsets[1] - offsets[0]} bytes")
        if problem:
            raise CheckpointError(f"checkpoint {path} has a damaged safetensors header: tensor {name!r} {problem}. "
                                  f"{_DAMAGED}")
        end = max(end, offsets[1])
    return end


def _written_by(meta: dict[str, str]) -> str:
    return f"written by caption-zoo {meta.get('zoo_version', '(unknown version)')}"


def _upgrade_hint(meta: dict[str, str]) -> str:
    return (
        f"It was {_written_by(meta)}; this is caption-zoo {__version__}. If it comes from a newer release "
        f"upgrade (pip install -U caption-zoo); otherwise the file was edited or damaged: re-save it from the "
        f"run that trained it."
    )


def _config_part(config: Any, key: str, path: Any, meta: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """``config[key]`` as (name, kwargs), or a CheckpointError naming the file and the key."""
    part = config.get(key) if isinstance(config, dict) else None
    if not isinstance(part, dict) or "name" not in part:
        what = "is missing" if not isinstance(config, dict) or key not in config else "has no 'name'"
        raise CheckpointError(
            f"checkpoint {path}: its config {what} for {key!r} (expected {{'name': ..., 'kwargs': {{...}}}}), "
            f"so the {key} cannot be rebuilt. {_upgrade_hint(meta)}"
        )
    name, kwargs = part["name"], part.get("kwargs", {})
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        raise CheckpointError(
            f"checkpoint {path}: config entry {key!r} is malformed (name {name!r}, kwargs of type "
            f"{type(kwargs).__name__}; expected a string and an object). {_upgrade_hint(meta)}"
        )
    return name, dict(kwargs)


def config_parts(path: str | Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """The checkpoint's encoder, decoder and tokenizer as ``{part: (name, kwargs)}``, every entry checked
    (a malformed one is a CheckpointError naming the file and the entry), without building anything:
    what ``zoo train --init`` needs to plan a run from a checkpoint."""
    meta = read_metadata(path)
    config = json.loads(meta["config"])
    return {key: _config_part(config, key, path, meta) for key in ("encoder", "decoder", "tokenizer")}


def load(path: str | Path, map_location: str | torch.device = "cpu") -> "CaptionModel":
    """Rebuild a model from the file alone (no network, no other file).

    In this order, so that a bad file costs nothing: the header (``read_metadata``); the config's parts
    measured on the meta device and compared with the file's tensors (a config that implies other shapes,
    such as an edited ``hidden_size`` of 10^7, is refused before any memory is allocated); the parts built
    (an unknown name or option names the file and the config entry); the weights read and checked finite."""
    path = Path(path)
    meta, tensors = _read_header(path)
    entry = "config"
    try:
        config = json.loads(meta[entry])
        entry = "tokenizer"
        tok_bytes = base64.b64decode(meta[entry])
    except (KeyError, ValueError, TypeError) as exc:
        state = "missing" if entry not in meta else "corrupt"
        raise CheckpointError(
            f"checkpoint {path}: metadata entry {entry!r} is {state} ({type(exc).__name__}: {exc}). "
            f"{_upgrade_hint(meta)}"
        ) from exc
    tok_name, _ = _config_part(config, "tokenizer", path, meta)
    enc_name, enc_kw = _config_part(config, "encoder", path, meta)
    dec_name, dec_kw = _config_part(config, "decoder", path, meta)
    tokenizer = _rebuild_tokenizer(tokenizer_from_bytes, tok_name, tok_bytes, path, meta)
    enc_kw["pretrained"] = False  # the weights come from this file
    part = "encoder"
    try:
        enc_meta = build_on_meta("encoder", enc_name, enc_kw)
        part = "decoder"
        dec_meta = None if enc_meta is None else build_on_meta(
            "decoder", dec_name, dec_kw, tokenizer.vocab_size, int(enc_meta.feature_dim))
        if dec_meta is not None:
            _check_shapes(_tensor_groups({"encoder": enc_meta, "decoder": dec_meta}), tensors, path, meta, config)
        part = "encoder"
        enc = create_encoder(enc_name, **enc_kw)
        part = "decoder"
        dec = create_decoder(dec_name, tokenizer.vocab_size, enc.feature_dim, **dec_kw)
    except CheckpointError:
        raise
    except ZooError as exc:
        raise _part_error(exc, part, path, meta, config) from exc
    model = CaptionModel(enc, dec, tokenizer, config)
    try:
        missing, unexpected = load_model(model, str(path), strict=False, device=str(map_location))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"checkpoint {path} could not be read: {exc}") from exc
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match the model its config describes: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}. Was it written by a different version of a plugin?"
        )
    _check_finite(model, path)
    model.eval()
    return model


def _part_error(exc: ZooError, part: str, path: Path, meta: dict[str, str], config: dict[str, Any]) -> CheckpointError:
    """A part of the config that does not build (an unknown name, an unknown or bad option, a decoder that
    breaks the contract), as a CheckpointError naming the file and the config entry."""
    name, kwargs = config[part]["name"], config[part].get("kwargs", {})
    if isinstance(exc, UnknownNameError):
        return CheckpointError(
            f"checkpoint {path} needs the {part} {name!r} (config entry {part!r}), which no installed plugin "
            f"provides: {exc}"
        )
    text = str(exc).rstrip()
    return CheckpointError(
        f"checkpoint {path}: config entry {part!r} ({part} {name!r}, options {kwargs}) does not build with "
        f"the installed plugins: {text}{'' if text.endswith(('.', '?', '!')) else '.'} {_upgrade_hint(meta)}"
    )


def _tensor_groups(parts: dict[str, torch.nn.Module]) -> list[tuple[list[str], tuple[int, ...]]]:
    """``(names, shape)`` per tensor of the parts as ``CaptionModel.state_dict`` names them; the names of
    tied tensors (one object) together, as ``save_model`` writes only one of them."""
    groups: dict[int, tuple[list[str], tuple[int, ...]]] = {}
    for prefix, module in parts.items():
        for key, tensor in module.state_dict(keep_vars=True).items():
            groups.setdefault(id(tensor), ([], tuple(tensor.shape)))[0].append(f"{prefix}.{key}")
    return list(groups.values())


def _check_shapes(
    shapes: list[tuple[list[str], tuple[int, ...]]], tensors: dict[str, Any], path: Path, meta: dict[str, str],
    config: dict[str, Any],
) -> None:
    """The tensors the config implies (measured on the meta device) against those in the file, before the
    model is built: a config edited to other sizes is refused here, naming the tensor and the options."""
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    missing: list[str] = []
    known: set[str] = set()
    for names, shape in shapes:
        known.update(names)
        present = [n for n in names if n in tensors]  # save_model keeps one name of tied tensors
        if not present:
            missing.append(names[0])
        mismatched += [(n, tuple(tensors[n]["shape"]), shape) for n in present if tuple(tensors[n]["shape"]) != shape]
    unexpected = sorted(set(tensors) - known)
    if mismatched:
        name, file_shape, implied = mismatched[0]
        part = name.split(".", 1)[0]
        implied_bytes = sum(math.prod(s) for _, s in shapes) * 4
        raise CheckpointError(
            f"checkpoint {path}: its config does not fit its weights: tensor {name!r} has shape {file_shape} in "
            f"the file, but the config's {part} {config[part]['name']!r} with options "
            f"{config[part].get('kwargs', {})} makes it {implied}"
            + (f" ({len(mismatched) - 1} more tensors differ)" if len(mismatched) > 1 else "")
            + f"; that config would hold {_size(implied_bytes)} of float32 weights. Nothing was built. "
            f"{_upgrade_hint(meta)}"
        )
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match the model its config describes: missing {sorted(missing)[:5]}, "
            f"unexpected {unexpected[:5]}. Was it written by a different version of a plugin?"
        )


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


def _check_finite(model: "CaptionModel", path: Path) -> None:
    """Weights that are NaN or infinite decode nothing (every score is NaN); refuse them naming the tensors."""
    # aminmax: one pass, no temporary (NaN propagates to both, an infinity shows as one): 12x faster than
    # isfinite(t).all() on CPU; the count is taken for the bad tensors only
    bad = [(k, int((~torch.isfinite(t)).sum())) for k, t in model.state_dict().items()
           if t.is_floating_point() and t.numel() and not all(math.isfinite(float(v)) for v in torch.aminmax(t))]
    if bad:
        name, count = bad[0]
        raise CheckpointError(
            f"checkpoint {path}: its weights are not finite: tensor {name!r} holds {count} NaN or infinite "
            f"value{'s' if count != 1 else ''}"
            + (f", and {len(bad) - 1} more tensors do ({', '.join(repr(k) for k, _ in bad[1:4])}"
               f"{', ...' if len(bad) > 4 else ''})" if len(bad) > 1 else "")
            + ". A model with such weights cannot caption anything; the training that saved it diverged. Use an "
            "earlier checkpoint (e.g. the run's best.safetensors) or train again (a lower learning rate)."
        )


def _rebuild_tokenizer(from_bytes: Any, name: str, data: bytes, path: Any, meta: dict[str, str]) -> Any:
    """The checkpoint's tokenizer; every failure is a CheckpointError naming the file and the tokenizer."""
    try:
        return from_bytes(name, data)
    except UnknownNameError as exc:
        raise CheckpointError(
            f"checkpoint {path} needs the tokenizer {name!r}, which no installed plugin provides: {exc}"
        ) from exc
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc} ({_written_by(meta)})") from exc
    except ZooError as exc:
        raise CheckpointError(
            f"checkpoint {path}: its {name!r} tokenizer does not load: {exc}. {_upgrade_hint(meta)}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - a third-party tokenizer's from_bytes may raise anything
        raise CheckpointError(
            f"checkpoint {path}: its {name!r} tokenizer does not load ({type(exc).__name__}: {exc}); the "
            f"tokenizer payload does not fit the installed {name!r} plugin. {_upgrade_hint(meta)} If the "
            f"tokenizer comes from a plugin, install the plugin version the checkpoint was trained with."
        ) from exc


def read_extra(path: str | Path) -> dict[str, Any]:
    """The ``extra`` metadata (scores, the run, the objective) as a JSON object; a CheckpointError naming
    the file when it is not one."""
    meta = read_metadata(path)
    return _json_object(meta, "extra", Path(path)) if "extra" in meta else {}


def objective_signature(extra: dict[str, Any], path: str | Path | None = None) -> str:
    """How the model in a checkpoint was trained, as one readable signature: the ``signature`` of
    ``extra["objective"]`` (written by the training objectives, e.g. ``scst(cider-d, baseline=mean, n=5,
    df=train, eos=yes)``), else its ``name``; a checkpoint without one was trained with cross-entropy: ``xe``.
    An ``objective`` entry with neither (edited, damaged) is a CheckpointError naming ``path``: a row
    recorded under a made-up objective would be compared with the wrong ones."""
    obj = extra.get("objective") if isinstance(extra, dict) else None
    if obj is None:
        return "xe"
    if isinstance(obj, dict) and isinstance(obj.get("signature"), str) and obj["signature"].strip():
        return obj["signature"]
    if isinstance(obj, dict) and isinstance(obj.get("name"), str) and obj["name"].strip():
        return obj["name"]
    raise CheckpointError(
        f"checkpoint {path if path is not None else '(unnamed)'}: its extra metadata's 'objective' entry "
        f"({json.dumps(obj)[:200]}) has neither a 'signature' nor a 'name', so how the model was trained is "
        f"unknown. The file was edited or damaged: re-save it from the run that trained it."
    )


def recorded_train_speed(extra: dict[str, Any], path: str | Path) -> float | None:
    """``extra["train_images_per_s"]`` (written by ``zoo train``): a finite number >= 0, or None when absent;
    anything else is a CheckpointError naming the file (a results row could not hold it)."""
    value = extra.get("train_images_per_s") if isinstance(extra, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise CheckpointError(
            f"checkpoint {path}: its extra metadata's 'train_images_per_s' is {value!r}, not a finite number "
            f">= 0. The file was edited or damaged: re-save it from the run that trained it."
        )
    return float(value)
