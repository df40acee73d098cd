"""``model.generate`` takes what people pass, as Hugging Face's image-to-text pipeline does: PIL images,
paths, uint8 arrays, lists of those, or an already-transformed tensor batch; anything else is a ZooError
that names what was passed and what is accepted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from tests.conftest import shared_path
from tests.helpers import tiny_model
from zoo.data.datasets import open_image
from zoo.errors import DataError, ZooError


@pytest.fixture(scope="module")
def model():
    return tiny_model("gru-attn")


def _pictures() -> list[PIL.Image.Image]:
    """Three small, different pictures: shapes on a plain ground, of different sizes and modes."""
    a = PIL.Image.new("RGB", (48, 40), (240, 240, 230))
    a.paste((200, 20, 20), (5, 5, 25, 25))
    b = PIL.Image.new("RGB", (32, 32), (20, 20, 200))
    b.paste((250, 250, 0), (10, 0, 20, 32))
    c = PIL.Image.new("L", (60, 30), 90)  # greyscale: converted to RGB like any data-set image
    c.paste(255, (40, 10, 55, 25))
    return [a, b, c]


def _reference(model, images: list[PIL.Image.Image], **kw):
    """What generate gave before: the caller transformed every image with the encoder's eval transform."""
    tf = model.encoder.transform(False)
    return model.generate(torch.stack([tf(im.convert("RGB")) for im in images]), **kw)


def test_pil_images_give_the_captions_of_their_transformed_batch(model):
    pics = _pictures()
    expected = _reference(model, pics)
    assert model.generate(pics) == expected
    assert model.generate(tuple(pics)) == expected
    assert model.generate(pics[0]) == expected[:1]  # one image: a batch of one


def test_paths_and_uint8_arrays_and_a_mixed_list(model, tmp_path):
    pics = _pictures()
    expected = _reference(model, pics)
    files = []
    for i, im in enumerate(pics):
        files.append(tmp_path / f"pic{i}.png")
        im.save(files[i])
    assert model.generate([str(f) for f in files]) == expected
    assert model.generate(files) == expected
    arrays = [np.asarray(im) for im in pics]  # (H, W, 3) and (H, W) uint8
    assert arrays[2].ndim == 2 and arrays[0].dtype == np.uint8
    assert model.generate(arrays) == expected
    assert model.generate([pics[0], str(files[1]), arrays[2]]) == expected
    same_size = np.stack([np.asarray(pics[1])] * 2)  # (N, H, W, C): a batch of arrays
    assert model.generate(same_size) == expected[1:2] * 2


def test_options_and_attention_work_from_pil_images(model):
    pics = _pictures()
    g = torch.Generator().manual_seed(3)
    sampled = model.generate(pics, sample=True, n=2, generator=g)
    assert len(sampled) == 3 and all(len(s) == 2 for s in sampled)
    found = model.generate(pics, return_attention=True)
    assert [a.caption for a in found] == _reference(model, pics)
    assert all(torch.allclose(a.weights.sum(-1), torch.ones(len(a.words))) for a in found)


def test_a_tensor_batch_is_used_as_it_is(model):
    batch = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert model.generate(batch) == model.generate(list(batch))  # a list of (3, H, W) transformed images
    assert model.generate(batch[1]) == model.generate(batch)[1:]  # one transformed image


def test_real_coco_images_by_path(model):
    folder = shared_path("coco-mini", "images")
    files = sorted(folder.glob("*.jpg"))[:2]
    assert files
    assert model.generate(files) == _reference(model, [open_image(f) for f in files])


@pytest.mark.parametrize("bad, named", [
    (42, "an int (42)"),
    ({"image": "cat.jpg"}, "a dict"),
    (np.zeros((8, 8, 3), dtype=np.float64), "a float64 array of shape (8, 8, 3)"),
    (np.zeros((8, 8, 7), dtype=np.uint8), "a uint8 array of shape (8, 8, 7)"),
    ([], "an empty list"),
    ([PIL.Image.new("RGB", (8, 8)), 3.5], "item 1 of the list is a float (3.5)"),
    (torch.zeros(3, 8), "a float32 tensor of shape (3, 8)"),
])
def test_anything_else_is_named_with_what_is_accepted(model, bad, named):
    with pytest.raises(ZooError) as info:
        model.generate(bad)
    msg = str(info.value)
    assert named in msg, msg
    assert "PIL image" in msg and "path" in msg and "uint8" in msg and "model.transform()" in msg


def test_a_missing_file_or_a_url_is_named(model, tmp_path):
    with pytest.raises(DataError, match="missing.jpg does not exist"):
        model.generate(str(tmp_path / "missing.jpg"))
    with pytest.raises(ZooError, match="URL"):
        model.generate("https://example.com/cat.jpg")


def test_images_of_different_sizes_after_the_transform_are_refused_by_name(model):
    batch = [torch.zeros(3, 32, 32), torch.zeros(3, 40, 32)]
    with pytest.raises(ZooError, match=r"item 1 .*\(3, 40, 32\).*\(3, 32, 32\)"):
        model.generate(batch)


def test_path_like_objects_other_than_str_work(model, tmp_path):
    im = _pictures()[0]
    im.save(tmp_path / "a.png")
    assert model.generate(Path(tmp_path / "a.png")) == _reference(model, [im])
