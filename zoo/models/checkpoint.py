"""One-file checkpoints: ``.safetensors`` with the config, tokenizer and zoo version in the metadata.

Never pickle: safetensors holds only tensors; everything else is JSON or base64 text in its header, so a
checkpoint can be inspected without running code from it. Writes are atomic (temp file + rename), so a
crash never leaves half a checkpoint behind under the real name.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_model, save_model

from zoo.errors import CheckpointError, UnknownNameError, ZooError
from zoo.files import atomic_write
from zoo.models.builder import create_decoder, create_encoder, tokenizer_from_bytes
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
    """The safetensors header metadata, with clear errors for missing, truncated or foreign files."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
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
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"checkpoint {path} has a corrupt safetensors header: {exc}") from exc
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise CheckpointError(
            f"checkpoint {path} is truncated: its tensors need {8 + n + end} bytes but the file has {size}. "
            f"Re-download or re-save it."
        )
    meta = header.get("__metadata__") or {}
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
    return meta


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


def load(path: str | Path, map_location: str | torch.device = "cpu") -> "CaptionModel":
    """Rebuild a model from the file alone (no network, no other file)."""
    meta = read_metadata(path)
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
    enc = create_encoder(enc_name, **enc_kw)
    dec = create_decoder(dec_name, tokenizer.vocab_size, enc.feature_dim, **dec_kw)
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
    model.eval()
    return model


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
    meta = read_metadata(path)
    return json.loads(meta.get("extra", "{}"))


def objective_signature(extra: dict[str, Any]) -> str:
    """How the model in a checkpoint was trained, as one readable signature: the ``signature`` of
    ``extra["objective"]`` (written by the training objectives, e.g. ``scst(cider-d, baseline=mean, n=5,
    df=train, eos=yes)``); a checkpoint without it was trained with cross-entropy: ``xe``."""
    obj = extra.get("objective") if isinstance(extra, dict) else None
    if isinstance(obj, dict) and isinstance(obj.get("signature"), str) and obj["signature"].strip():
        return obj["signature"]
    if isinstance(obj, dict) and isinstance(obj.get("name"), str):
        return obj["name"]
    return "xe"
