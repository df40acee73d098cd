"""Hostile checkpoints (crafted byte by byte): every one is refused with a CheckpointError naming the file and
what is wrong in it, before any work, before any large allocation, never a bare traceback."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
import torch

import zoo
from zoo.cli import main
from zoo.errors import CheckpointError
from zoo.models.checkpoint import read_metadata

from .helpers import tiny_model


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return zoo.save(tiny_model("gru"), tmp_path_factory.mktemp("good") / "m.safetensors")


def _split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write(dest: Path, header: object | bytes, data: bytes = b"") -> Path:
    text = header if isinstance(header, bytes) else json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    dest.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return dest


def _edited(good: Path, dest: Path, edit) -> Path:
    header, data = _split(good)
    edit(header)
    return _write(dest, header, data)


def _config_edit(**changes):
    """An edit of the metadata's config: ``part=(name, kwargs changes)``."""
    def edit(header):
        config = json.loads(header["__metadata__"]["config"])
        for part, (name, kwargs) in changes.items():
            if name is not None:
                config[part]["name"] = name
            config[part]["kwargs"].update(kwargs)
        header["__metadata__"]["config"] = json.dumps(config)
    return edit


def _refused(path: Path, *words: str, calls=(read_metadata, zoo.load)) -> None:
    for call in calls:
        with pytest.raises(CheckpointError) as err:
            call(path)
        msg = str(err.value)
        assert str(path) in msg and all(w in msg for w in words), msg


# -- the safetensors header itself (issue 17, item 9) ------------------------------------------------------
def test_a_header_that_is_a_json_list(tmp_path):
    _refused(_write(tmp_path / "list.safetensors", [1, 2, 3]), "header is a JSON array, not an object")


def test_metadata_that_is_not_an_object(good, tmp_path):
    bad = _edited(good, tmp_path / "meta.safetensors", lambda h: h.update(__metadata__=["format", "caption-zoo"]))
    _refused(bad, "'__metadata__'", "is a JSON array")


def test_a_tensor_without_data_offsets(good, tmp_path):
    name = next(k for k in _split(good)[0] if k != "__metadata__")
    bad = _edited(good, tmp_path / "offsets.safetensors", lambda h: h[name].pop("data_offsets"))
    _refused(bad, f"tensor {name!r}", "data_offsets")
    bad = _edited(good, tmp_path / "offsets2.safetensors", lambda h: h[name].update(data_offsets=[8, "x"]))
    _refused(bad, f"tensor {name!r}", "data_offsets")


def test_a_deeply_nested_header(tmp_path):
    depth = 200_000
    bad = _write(tmp_path / "deep.safetensors", b"[" * depth + b"]" * depth)
    _refused(bad, "nested too deeply")


def test_metadata_values_that_are_not_strings(good, tmp_path):
    bad = _edited(good, tmp_path / "values.safetensors", lambda h: h["__metadata__"].update(zoo_version=[0, 1]))
    _refused(bad, "'zoo_version'", "not a string")


@pytest.mark.parametrize("key, value", [("extra", "{not json"), ("config", "{not json"), ("extra", "[1, 2]")])
def test_info_on_extra_or_config_that_is_not_a_json_object(good, tmp_path, capsys, key, value):
    bad = _edited(good, tmp_path / f"{key}.safetensors", lambda h: h["__metadata__"].update({key: value}))
    _refused(bad, f"{key!r}")
    rc = main(["info", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and str(bad) in err and f"{key!r}" in err, err


# -- a config that would allocate terabytes: checked against the file before anything is built ------------
def test_a_hidden_size_of_ten_million_is_refused_before_allocating(good, tmp_path):
    bad = _edited(good, tmp_path / "huge.safetensors", _config_edit(decoder=(None, {"hidden_size": 10**7})))
    _refused(bad, "decoder", "hidden_size", "shape", calls=(zoo.load,))


def test_an_img_size_of_a_million_is_refused_before_allocating(good, tmp_path):
    bad = _edited(good, tmp_path / "wide.safetensors", _config_edit(encoder=(None, {"img_size": 10**6})))
    _refused(bad, "img_size", "1000000", calls=(zoo.load,))


# -- what a checkpoint names: unknown parts and options name the file and the key (item 7) -------------------
def test_an_unknown_part_name_in_a_checkpoint(good, tmp_path):
    bad = _edited(good, tmp_path / "name.safetensors", _config_edit(decoder=("gru-atn", {})))
    _refused(bad, "'decoder'", "'gru-atn'", "gru-attn", calls=(zoo.load,))


def test_an_unknown_option_in_a_checkpoint(good, tmp_path):
    bad = _edited(good, tmp_path / "option.safetensors", _config_edit(decoder=(None, {"hiden_size": 24})))
    _refused(bad, "'decoder'", "hiden_size", "hidden_size", calls=(zoo.load,))


# -- NaN weights ------------------------------------------------------------------------------------------
def _with_nan(good: Path, dest: Path) -> tuple[Path, str]:
    model = zoo.load(good)
    name = "decoder.out.weight" if "decoder.out.weight" in model.state_dict() else next(
        k for k, v in model.state_dict().items() if v.is_floating_point() and k.startswith("decoder."))
    with torch.no_grad():
        model.state_dict()[name][0, 0] = math.nan
    return zoo.save(model, dest), name


def test_nan_weights_are_named_at_load_and_by_zoo_caption(good, tmp_path, capsys):
    from PIL import Image

    bad, name = _with_nan(good, tmp_path / "nan.safetensors")
    _refused(bad, repr(name), "not finite", calls=(zoo.load,))
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(photo)
    rc = main(["caption", str(bad), str(photo)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and str(bad) in err and name in err and "not finite" in err, err
    assert "empty sequence" not in err


# -- everything a command needs is read before any work (item 2) --------------------------------------------
def test_eval_refuses_a_bad_extra_before_decoding(good, tmp_path, capsys, monkeypatch):
    import zoo.evaluation.model_eval

    def decode(*a, **k):
        raise AssertionError("decoded before reading the checkpoint's metadata")

    monkeypatch.setattr(zoo.evaluation.model_eval, "generate_for_items", decode)
    bad = _edited(good, tmp_path / "extra.safetensors", lambda h: h["__metadata__"].update(extra="{oops"))
    shapes = ["--data", "shapes", "--split", "test", "--set", "data.num_train=4", "--set", "data.num_val=2",
              "--set", "data.num_test=4", "--set", "data.image_size=32", "--no-progress", "--metrics", "cider-d",
              "--no-ptb", "--db", str(tmp_path / "db.sqlite"), "--out", str(tmp_path / "out")]
    rc = main(["eval", str(bad), *shapes])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and str(bad) in err and "'extra'" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, words", [
    ({"train_images_per_s": "fast"}, ("'train_images_per_s'", "'fast'")),
    ({"objective": {"name": ""}}, ("'objective'",)),
])
def test_eval_refuses_provenance_it_could_not_record_before_decoding(good, tmp_path, capsys, monkeypatch, extra, words):
    import zoo.evaluation.model_eval

    def decode(*a, **k):
        raise AssertionError("decoded before reading the checkpoint's metadata")

    monkeypatch.setattr(zoo.evaluation.model_eval, "generate_for_items", decode)
    monkeypatch.setattr("zoo.commands.eval.check_writable", lambda *a, **k: None)  # no Java/db needed here
    bad = _edited(good, tmp_path / "prov.safetensors", lambda h: h["__metadata__"].update(extra=json.dumps(extra)))
    rc = main(["eval", str(bad), "--data", "shapes", "--set", "data.num_test=4", "--set", "data.image_size=32",
               "--no-progress", "--metrics", "cider-d", "--db", str(tmp_path / "db.sqlite"),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and str(bad) in err and all(w in err for w in words), err


def test_info_on_a_config_whose_parts_are_not_objects(good, tmp_path, capsys):
    def edit(header):
        config = json.loads(header["__metadata__"]["config"])
        config["decoder"] = "gru"
        header["__metadata__"]["config"] = json.dumps(config)

    bad = _edited(good, tmp_path / "parts.safetensors", edit)
    rc = main(["info", str(bad)])
    out, err = capsys.readouterr()
    assert rc == 0 and "decoder: 'gru' (malformed" in out and "Traceback" not in err, err
    _refused(bad, "'decoder'", calls=(zoo.load,))


def test_a_shape_that_its_data_cannot_hold(good, tmp_path):
    """A header may not claim a huge tensor over a few bytes (with a matching config, the model it implies
    would pass the shape comparison and be built for real)."""
    name = next(k for k, v in _split(good)[0].items() if k != "__metadata__" and len(v["shape"]) == 2)
    bad = _edited(good, tmp_path / "shape.safetensors", lambda h: h[name].update(shape=[10**7, 10**7]))
    _refused(bad, f"tensor {name!r}", "[10000000, 10000000]", "data_offsets")


@pytest.mark.parametrize("value", ["big", -5])
def test_a_bad_option_value_in_a_checkpoint(good, tmp_path, value):
    bad = _edited(good, tmp_path / "value.safetensors", _config_edit(decoder=(None, {"hidden_size": value})))
    _refused(bad, "'decoder'", "hidden_size", repr(value), calls=(zoo.load,))


@pytest.mark.parametrize("config", [{"encoder": "resnet10t"}, {"encoder": {"name": 3}}])
def test_train_init_from_a_checkpoint_with_a_malformed_config_names_the_file(tmp_path, capsys, config):
    """``zoo train --init`` plans the run from the checkpoint's parts: a part that is not an object (a raw
    KeyError/TypeError before) is named with the file and the entry."""
    from safetensors.torch import save_file

    from zoo.cli import main

    ckpt = tmp_path / "odd.safetensors"
    save_file({"w": torch.zeros(1)}, str(ckpt), metadata={"format": "caption-zoo", "config": json.dumps(config)})
    rc = main(["train", "--init", str(ckpt), "--data", "shapes", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and str(ckpt) in err and "'encoder'" in err, err
