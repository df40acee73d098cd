"""One-file checkpoints: bit-exact reload, clear errors for bad files, no pickles."""

from __future__ import annotations

import json
import struct

from pathlib import Path

import pytest
import torch

import zoo
from zoo.checkpoint import FORMAT_VERSION, read_metadata
from zoo.errors import CheckpointError

from .helpers import images, tiny_model


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
    import zoo.checkpoint as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_model", boom)
    with pytest.raises(OSError):
        zoo.save(model, path)
    assert path.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left


def test_sha256_verification(tmp_path):
    from zoo.checkpoint import fetch_verified, sha256_file

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

    from zoo.checkpoint import fetch_verified

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
