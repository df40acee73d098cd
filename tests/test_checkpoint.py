"""One-file checkpoints: bit-exact reload, clear errors for bad files, no pickles."""

from __future__ import annotations

import base64
import json
import struct
import types
from pathlib import Path

import pytest
import torch

import zoo
from zoo.models.checkpoint import FORMAT_VERSION, read_metadata
from zoo.errors import CheckpointError, ZooError

from .helpers import CAPTIONS, images, tiny_model


@pytest.mark.parametrize("decoder", ["gru", "gru-stacked", "gru-attn", "lstm"])
def test_save_load_is_bit_exact(tmp_path, decoder):
    model = tiny_model(decoder).eval()
    x = images(3)
    tokens = model.tokenizer.batch_encode(["a red circle", "two green triangles", "a star"])[:, :-1]
    path = zoo.save(model, tmp_path / "m.safetensors")
    same = zoo.load(path)
    with torch.no_grad():
        assert torch.equal(model(x, tokens), same(x, tokens))
    for k, v in model.state_dict().items():
        assert torch.equal(v, same.state_dict()[k]), k
    assert model.generate(x, beam_size=3) == same.generate(x, beam_size=3)
    assert same.config == model.config
    assert same.tokenizer.to_bytes() == model.tokenizer.to_bytes()


def test_checkpoint_is_self_describing_safetensors(tmp_path):
    model = tiny_model("gru")
    path = zoo.save(model, tmp_path / "m.safetensors")
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header["__metadata__"]
    assert meta["format"] == "caption-zoo" and int(meta["format_version"]) == FORMAT_VERSION
    assert json.loads(meta["config"])["decoder"]["name"] == "gru"
    assert meta["zoo_version"] == zoo.__version__
    assert b"\x80\x04" not in raw[:16]  # not a pickle


def test_truncated_checkpoint(tmp_path):
    path = zoo.save(tiny_model("gru"), tmp_path / "m.safetensors")
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors is truncated.*Re-download or re-save"):
        zoo.load(cut)


def test_not_safetensors(tmp_path):
    bad = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, bad)  # a pickle
    with pytest.raises(CheckpointError, match=r"model\.pth is not a valid safetensors file.*pickle is not accepted"):
        zoo.load(bad)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        zoo.load(tiny)
    with pytest.raises(CheckpointError, match="does not exist"):
        zoo.load(tmp_path / "missing.safetensors")


def test_foreign_safetensors(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, p)
    with pytest.raises(CheckpointError, match="not a caption-zoo checkpoint.*pretrained=PATH"):
        zoo.load(p)


def test_newer_format_version_is_refused(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "future.safetensors"
    save_file({"w": torch.zeros(2)}, p, metadata={"format": "caption-zoo", "format_version": "99", "zoo_version": "9.0"})
    with pytest.raises(CheckpointError, match=r"format version 99.*caption-zoo 9\.0.*pip install -U caption-zoo"):
        read_metadata(p)


def test_save_is_atomic(tmp_path, monkeypatch):
    model = tiny_model("gru")
    path = zoo.save(model, tmp_path / "m.safetensors")
    before = path.read_bytes()
    import zoo.models.checkpoint as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_model", boom)
    with pytest.raises(OSError):
        zoo.save(model, path)
    assert path.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left


def test_sha256_verification(tmp_path):
    from zoo.models.hub import fetch_verified
    from zoo.files import sha256_file

    p = zoo.save(tiny_model("gru"), tmp_path / "m.safetensors")
    good = sha256_file(p)
    assert fetch_verified(str(p), good) == p
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        fetch_verified(str(p), "0" * 64)


def test_written_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through a private temporary file; the result must still be readable by others
    as any file the user writes (0644 under umask 022), or collaborators cannot load shared checkpoints."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = zoo.save(tiny_model("gru"), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_corrupt_download_is_deleted_a_local_file_is_not(tmp_path, monkeypatch):
    import urllib.request

    from zoo.models.hub import fetch_verified

    monkeypatch.setattr(urllib.request, "urlretrieve", lambda url, dest: Path(dest).write_bytes(b"truncated"))
    dest = tmp_path / "dl.safetensors"
    with pytest.raises(CheckpointError, match="deleted; run again"):
        fetch_verified("https://example.invalid/m.safetensors", "0" * 64, dest=dest)
    assert not dest.exists()
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"my own file")
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        fetch_verified(str(mine), "0" * 64)
    assert mine.read_bytes() == b"my own file"


# -- edited or foreign checkpoints: CheckpointError naming the file and the entry, never a bare traceback --
def _with_metadata(src: Path, dest: Path, **changes: str | None) -> Path:
    """A copy of checkpoint ``src`` with metadata entries replaced (None removes one); tensors unchanged."""
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header["__metadata__"]
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    dest.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    return dest


def _meta(path: Path) -> dict[str, str]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n])["__metadata__"]


def test_metadata_copy_helper_keeps_a_loadable_checkpoint(tmp_path):
    src = zoo.save(tiny_model("gru"), tmp_path / "m.safetensors")
    copy = _with_metadata(src, tmp_path / "copy.safetensors", extra='{"note": "edited"}')
    assert zoo.load(copy).config == zoo.load(src).config


def test_non_integer_format_version_is_a_clear_error(tmp_path):
    src = zoo.save(tiny_model("gru"), tmp_path / "m.safetensors")
    edited = _with_metadata(src, tmp_path / "v11.safetensors", format_version="1.1", zoo_version="0.3.0")
    for call in (read_metadata, zoo.load):
        with pytest.raises(CheckpointError) as err:
            call(edited)
        msg = str(err.value)
        assert "v11.safetensors" in msg and "'1.1'" in msg and "caption-zoo 0.3.0" in msg
        assert "pip install -U caption-zoo" in msg


@pytest.mark.parametrize("missing", ["tokenizer", "encoder", "decoder"])
def test_config_without_a_part_names_the_file_and_the_key(tmp_path, missing):
    src = zoo.save(tiny_model("gru"), tmp_path / "m.safetensors")
    config = json.loads(_meta(src)["config"])
    del config[missing]
    edited = _with_metadata(src, tmp_path / "edited.safetensors", config=json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        zoo.load(edited)
    msg = str(err.value)
    assert "edited.safetensors" in msg and f"{missing!r}" in msg and f"caption-zoo {zoo.__version__}" in msg


def test_missing_metadata_entry_is_named(tmp_path):
    src = zoo.save(tiny_model("gru"), tmp_path / "m.safetensors")
    edited = _with_metadata(src, tmp_path / "notok.safetensors", tokenizer=None)
    with pytest.raises(CheckpointError, match=r"notok\.safetensors: metadata entry 'tokenizer' is missing"):
        zoo.load(edited)


def _sentencepiece_model():
    tok = zoo.create_tokenizer("sentencepiece", [c for c in CAPTIONS for _ in range(4)], vocab_size=40)
    torch.manual_seed(0)
    return zoo.create_model(
        encoder="resnet10t", decoder="gru", tokenizer=tok, encoder_kwargs={"img_size": 32},
        decoder_kwargs={"embed_size": 16, "hidden_size": 24},
    )


def _add_tokenizer_option(tok_bytes: bytes, name: str, value) -> bytes:
    if tok_bytes.startswith(b"zoo-sentencepiece\n"):
        magic, header, proto = tok_bytes.split(b"\n", 2)
        head = json.loads(header)
        head["options"][name] = value
        return magic + b"\n" + json.dumps(head).encode() + b"\n" + proto
    payload = json.loads(tok_bytes)
    payload["options"][name] = value
    return json.dumps(payload).encode()


@pytest.mark.parametrize("kind", ["sentencepiece", "word"])
def test_tokenizer_option_unknown_to_this_version(tmp_path, kind):
    model = _sentencepiece_model() if kind == "sentencepiece" else tiny_model("gru")
    src = zoo.save(model, tmp_path / "m.safetensors")
    assert zoo.load(src).tokenizer.to_bytes() == model.tokenizer.to_bytes()
    tok = _add_tokenizer_option(model.tokenizer.to_bytes(), "byte_fallback", True)
    edited = _with_metadata(src, tmp_path / "newer.safetensors", tokenizer=base64.b64encode(tok).decode("ascii"))
    with pytest.raises(CheckpointError) as err:
        zoo.load(edited)
    msg = str(err.value)
    assert "newer.safetensors" in msg and "'byte_fallback'" in msg and kind in msg
    assert "pip install -U caption-zoo" in msg


def test_unregistered_tokenizer_name_in_a_checkpoint(tmp_path):
    src = zoo.save(tiny_model("gru"), tmp_path / "m.safetensors")
    config = json.loads(_meta(src)["config"])
    config["tokenizer"]["name"] = "MyTokenizer"
    edited = _with_metadata(src, tmp_path / "mine.safetensors", config=json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        zoo.load(edited)
    assert "mine.safetensors needs the tokenizer 'MyTokenizer'" in str(err.value)
    assert "unknown tokenizer" in str(err.value)


# -- a third-party tokenizer is recorded under its registered name ----------------------------------------
class _LetterTokenizer(zoo.Tokenizer):
    """A third party's tokenizer that sets no ``name`` attribute: one id per letter."""

    def __init__(self, letters: str) -> None:
        self.letters = letters

    @classmethod
    def train(cls, captions, **options):
        return cls("".join(sorted({ch for c in captions for ch in c if ch.isalpha()})))

    def encode(self, text):
        letters = [ch for ch in text if ch.isalpha()]
        return [4 + self.letters.index(ch) if ch in self.letters else self.unk_id for ch in letters]

    def decode(self, ids):
        return "".join(self.letters[i - 4] for i in self.content_ids(ids) if i >= 4)

    @property
    def vocab_size(self):
        return 4 + len(self.letters)

    def to_bytes(self):
        return self.letters.encode("utf-8")

    @classmethod
    def from_bytes(cls, data):
        return cls(bytes(data).decode("utf-8"))


def _letter_model():
    torch.manual_seed(0)
    return zoo.create_model(
        encoder="resnet10t", decoder="gru", tokenizer=_LetterTokenizer.train(CAPTIONS),
        encoder_kwargs={"img_size": 32}, decoder_kwargs={"embed_size": 16, "hidden_size": 24},
    )


def test_third_party_tokenizer_without_a_name_is_saved_under_its_registered_name(tmp_path, fresh_registry):
    @zoo.hookimpl
    def zoo_register(registry):
        registry.add_tokenizer("letters", _LetterTokenizer)

    plugin = types.ModuleType("letters_plugin")
    plugin.zoo_register = zoo_register
    zoo.load_plugin(plugin, name="letters-plugin")
    model = _letter_model()
    assert model.config["tokenizer"]["name"] == "letters"
    again = zoo.load(zoo.save(model, tmp_path / "letters.safetensors"))
    assert isinstance(again.tokenizer, _LetterTokenizer) and again.tokenizer.letters == model.tokenizer.letters


def test_unregistered_tokenizer_is_refused_when_the_model_is_created():
    with pytest.raises(ZooError) as err:
        _letter_model()
    msg = str(err.value)
    assert "_LetterTokenizer" in msg and "not registered" in msg and "add_tokenizer" in msg


def test_a_training_state_is_told_apart_from_a_model(tmp_path):
    """``state.safetensors`` (optimiser and data position too) is what `--resume` reads; handed to
    ``zoo.load`` it must point to the run's model files, not call itself a foreign file."""
    from zoo.training.state import save_state

    model = tiny_model("gru")
    opt = torch.optim.AdamW(model.parameters())
    path = tmp_path / "run" / "state.safetensors"
    path.parent.mkdir()
    save_state(path, model, opt, {"step": 3, "epoch": 0, "pos": 0, "best": None})
    with pytest.raises(CheckpointError, match="resumable training state.*best.safetensors"):
        zoo.load(path)
