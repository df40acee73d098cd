"""Decoding images as a command-line user meets them: large files, Pillow's bomb guard, several files at once."""

from __future__ import annotations

import json
import os
import warnings

import PIL.Image
import pytest

from tests.helpers import tiny_model
from tests.test_datasets import _png_header
from zoo.cli import main as zoo_main
from zoo.data.datasets import open_image
from zoo.errors import DataError

MAX_PIXELS_ENV = "ZOO_MAX_IMAGE_PIXELS"  # the name users are told about (zoo.data.datasets.MAX_PIXELS_ENV)


@pytest.fixture(autouse=True)
def default_limit(monkeypatch):
    monkeypatch.setenv(MAX_PIXELS_ENV, "")  # restored after the test, also when a flag sets it


def test_an_image_over_pillows_warning_size_decodes_without_a_raw_python_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1_000_000)
    PIL.Image.new("RGB", (1200, 1000), (9, 9, 9)).save(tmp_path / "wide.png")  # 1.2 M: Pillow would warn
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert open_image(tmp_path / "wide.png").size == (1200, 1000)
    assert not [w for w in caught if issubclass(w.category, PIL.Image.DecompressionBombWarning)]


def test_a_large_jpeg_is_decoded_downscaled_and_counts_at_that_size(tmp_path, monkeypatch):
    PIL.Image.new("RGB", (4100, 3000), (200, 30, 30)).save(tmp_path / "photo.jpg", quality=50)
    monkeypatch.setenv(MAX_PIXELS_ENV, "4000000")  # under 4100×3000 = 12.3 M, over 2050×1500
    im = open_image(tmp_path / "photo.jpg")
    assert im.size == (2050, 1500) and im.mode == "RGB"  # libjpeg's 1/2 scale: both sides still ≥ 1024
    assert im.getpixel((1000, 700))[0] > 150
    _png_header(tmp_path / "huge.png", 4100, 3000)  # a PNG cannot be decoded smaller
    with pytest.raises(DataError) as err:
        open_image(tmp_path / "huge.png")
    text = str(err.value)
    assert "12,300,000 pixels" in text and "over the limit of 4,000,000" in text
    assert "--max-image-pixels" in text and f"{MAX_PIXELS_ENV}=" in text and "PIL.Image.MAX_IMAGE_PIXELS =" not in text


def test_the_limit_comes_from_the_environment_and_zero_means_none(tmp_path, monkeypatch):
    _png_header(tmp_path / "big.png", 20_000, 20_000)
    with pytest.raises(DataError, match="over the limit"):
        open_image(tmp_path / "big.png")  # 400 M: over twice Pillow's default
    monkeypatch.setenv(MAX_PIXELS_ENV, "0")
    with pytest.raises(DataError, match="cannot be decoded"):  # no limit: it is decoded (and is empty)
        open_image(tmp_path / "big.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(DataError, match=f"{MAX_PIXELS_ENV}='lots' is not a number"):
        open_image(tmp_path / "big.png")


def test_caption_captions_every_readable_file_and_reports_each_bad_one(tmp_path, capsys):
    import zoo

    ckpt = tmp_path / "m.safetensors"
    zoo.save(tiny_model(), ckpt)
    for name, colour in (("a.png", (200, 0, 0)), ("c.png", (0, 0, 200))):
        PIL.Image.new("RGB", (32, 32), colour).save(tmp_path / name)
    (tmp_path / "bad.jpg").write_bytes(os.urandom(500))
    PIL.Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    files = [str(tmp_path / n) for n in ("a.png", "bad.jpg", "c.png", "big.png")]
    rc = zoo_main(["caption", str(ckpt), *files, "--beam", "1", "--max-image-pixels", "5000"])
    captured = capsys.readouterr()
    assert rc == 1
    lines = captured.out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [files[0], files[2]] and all("\t" in x for x in lines)
    assert "bad.jpg" in captured.err and "big.png" in captured.err and "over the limit of 5,000" in captured.err
    assert "2 of 4 file(s) could not be read" in captured.err and "Traceback" not in captured.err

    rc = zoo_main(["caption", str(ckpt), *files[:3], "--beam", "1", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 1 and [sorted(r) for r in rows] == [["caption", "file"], ["error", "file"], ["caption", "file"]]
