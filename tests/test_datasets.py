"""Data sets: the generated ``shapes`` set, COCO (official and Karpathy), folders, and image loading."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from zoo.data.datasets import CaptionDataset, ImageDataset, Item, collate_skip_none, load_dataset, open_image
from zoo.errors import DataError
from zoo_plugins.datasets import shapes
from zoo_plugins.datasets.coco import coco_dataset, karpathy_dataset
from zoo_plugins.datasets.folder import folder_dataset, hash_split

SMALL = dict(num_train=60, num_val=20, num_test=20)


def small_shapes(split: str, **kw) -> CaptionDataset:
    return shapes.shapes_dataset(split=split, **{**SMALL, **kw})


def pixels(item: Item) -> bytes:
    return item.load_image().tobytes()


# -- shapes -----------------------------------------------------------------------------------------------
def test_shapes_is_deterministic_per_seed_and_split():
    first = small_shapes("train")
    first_pixels = [pixels(it) for it in first]
    shapes._generate.cache_clear()  # regenerate from scratch, not from the cache
    again = small_shapes("train")
    assert [it.captions for it in again] == [it.captions for it in first]
    assert [pixels(it) for it in again] == first_pixels
    assert again.fingerprint() == first.fingerprint()

    other_seed = small_shapes("train", seed=1)
    assert sum(a == pixels(b) for a, b in zip(first_pixels, other_seed)) == 0
    val = small_shapes("val")
    assert all(pixels(v) != first_pixels[i] for i, v in enumerate(val))


def test_shapes_splits_are_disjoint_and_fixed():
    splits = {s: small_shapes(s) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [60, 20, 20]
    ids = [set(d.references()) for d in splits.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    digests = [{hashlib.sha256(pixels(it)).hexdigest() for it in d} for d in splits.values()]
    assert not (digests[0] & digests[1] or digests[0] & digests[2] or digests[1] & digests[2])
    # val and test do not move when the training set grows
    bigger = shapes.shapes_dataset(split="val", num_train=200, num_val=20, num_test=20)
    assert bigger.references() == splits["val"].references()


def test_shapes_image_is_rgb_of_requested_size():
    item = small_shapes("val", image_size=48)[0]
    image = item.load_image()
    assert image.mode == "RGB" and image.size == (48, 48)


COLOURS = "|".join(shapes.COLOURS)
KINDS = "|".join(shapes.SHAPES)
NP = rf"(?:a|an|the) (?:({COLOURS}) )?({KINDS}|shape)"
PLACES = {phrase: cell for cell, phrases in shapes.POSITIONS.items() for phrase in phrases}
PLACE = "|".join(sorted(PLACES, key=len, reverse=True))
RELATION = r"to the left of|left of|to the right of|right of|above|below"


def _matches(shape: shapes.Shape, colour: str | None, kind: str) -> bool:
    return (colour is None or shape.colour == colour) and kind in (shape.shape, "shape")


def _check_caption(scene: shapes.Scene, caption: str) -> None:
    objs = scene.shapes
    text = caption.replace(",", "")
    # every colour/shape noun phrase names something in the picture, with the right count
    counted = rf"\b(a|an|the|one|two|three|four) (?:({COLOURS}) )?({KINDS}|shape)s?\b"
    for number, colour, kind in re.findall(counted, text):
        n = sum(_matches(o, colour or None, kind) for o in objs)
        if number in ("two", "three", "four"):
            assert n == shapes.NUMBERS.index(number), (caption, scene)
        else:
            assert n >= 1, (caption, scene)
    total = re.fullmatch(r"(?:there are )?(two|three|four) shapes", text)
    if total:
        assert len(objs) == shapes.NUMBERS.index(total.group(1)), (caption, scene)
    # positions: "NP [is] PLACE" and "PLACE there is NP"
    for colour, kind, place in re.findall(rf"{NP} (?:is )?({PLACE})\b", text) + [
        (c, k, p) for p, c, k in re.findall(rf"^({PLACE}) there is {NP}", text)
    ]:
        at = PLACES[place]
        assert any(_matches(o, colour or None, kind) and (o.row, o.col) == at for o in objs), (caption, scene)
    # relations between two shapes
    for c1, k1, rel, c2, k2 in re.findall(rf"{NP} (?:is )?({RELATION}) {NP}", text):
        def holds(a: shapes.Shape, b: shapes.Shape) -> bool:
            if "left" in rel:
                return a.col < b.col
            if "right" in rel:
                return a.col > b.col
            return a.row < b.row if rel == "above" else a.row > b.row

        assert any(
            _matches(a, c1, k1) and _matches(b, c2, k2) and holds(a, b) for a in objs for b in objs if a is not b
        ), (caption, scene)


def test_shapes_captions_describe_the_rendered_scene():
    data = small_shapes("train")
    rows = shapes.generate_split("train", **SMALL)
    vocabulary: set[str] = set()
    relations = positions = 0
    for item, (scene, captions) in zip(data, rows):
        assert item.captions == captions
        assert len(captions) >= 5 and len(set(captions)) == len(captions)
        for caption in captions:
            assert len(caption.replace(",", "").split()) <= 16
            vocabulary.update(caption.replace(",", "").split())
            _check_caption(scene, caption)
            relations += bool(re.search(RELATION, caption))
            positions += bool(re.search(PLACE, caption))
        said = " ".join(captions)
        assert {o.colour for o in scene.shapes} <= set(re.findall(COLOURS, said))
        assert {o.shape for o in scene.shapes} <= set(re.findall(KINDS, said))
        # the rendered pixels show each shape's colour at its centre on a plain background
        image = np.asarray(item.load_image()).astype(int)
        size = image.shape[0]
        for o in scene.shapes:
            centre = image[int(o.y * size / shapes.UNITS), int(o.x * size / shapes.UNITS)]
            assert np.abs(centre - shapes.COLOURS[o.colour]).max() <= 30, (o, centre)
        assert tuple(image[0, 0]) == shapes.BACKGROUNDS[scene.background]
    assert len(vocabulary) <= 50
    assert relations > 60 and positions > 60  # where things are matters in most images


def test_shapes_checker_catches_a_false_caption():
    red_circle = shapes.Shape(0, 0, "circle", "red", 16, 16, 10)
    blue_square = shapes.Shape(2, 2, "square", "blue", 80, 80, 10)
    scene = shapes.Scene((red_circle, blue_square), 0)
    _check_caption(scene, "a red circle above a blue square")
    for wrong in ("a red circle below a blue square", "two red circles", "a green circle", "a circle in the middle"):
        with pytest.raises(AssertionError):
            _check_caption(scene, wrong)


# -- fingerprints -----------------------------------------------------------------------------------------
def test_fingerprint_is_stable_and_follows_the_content():
    data = small_shapes("val")
    fp = data.fingerprint()
    assert fp == small_shapes("val").fingerprint() and re.fullmatch(r"[0-9a-f]{64}", fp)
    assert small_shapes("val", image_size=32).fingerprint() != fp  # same captions, other pixels
    assert data[:10].fingerprint() != fp
    edited = [Item(it.image_id, list(it.captions), it.path, it.render) for it in data]
    assert CaptionDataset(data.name, data.split, edited, info=data.info).fingerprint() == fp
    edited[3].captions[0] += " today"
    assert CaptionDataset(data.name, data.split, edited, info=data.info).fingerprint() != fp


def test_fingerprint_ignores_where_the_data_set_is_mounted(coco_mini):
    relative = coco_dataset(root=os.path.relpath(coco_mini))
    absolute = coco_dataset(root=coco_mini.resolve())
    assert relative.fingerprint() == absolute.fingerprint()
    moved = [Item(it.image_id, it.captions, Path("/elsewhere") / it.path.name) for it in absolute]
    elsewhere = CaptionDataset("coco", "train", moved, root="/elsewhere", info=absolute.info)
    assert elsewhere.fingerprint() == absolute.fingerprint()


def test_duplicate_image_ids_are_refused():
    with pytest.raises(DataError, match="7"):
        CaptionDataset("x", "train", [Item(7, ["a"]), Item(7, ["b"])])


# -- COCO -------------------------------------------------------------------------------------------------
def test_coco_loads_coco_mini_from_its_root(coco_mini):
    data = load_dataset("coco", root=str(coco_mini), split="val")
    assert len(data) == 282 and all(len(it.captions) == 5 for it in data)
    assert len(data.captions()) == 1410
    explicit = load_dataset(
        "coco", root=str(coco_mini), split="val", annotations=coco_mini / "captions.json", images=coco_mini / "images"
    )
    assert explicit.references() == data.references()
    official = json.loads((coco_mini / "captions.json").read_text())
    sizes = {im["id"]: (im["width"], im["height"]) for im in official["images"]}
    for item in (data[0], data[-1]):
        image = item.load_image()
        assert image.mode == "RGB" and image.size == sizes[item.image_id]
    assert len(coco_dataset(root=coco_mini, max_images=7)) == 7


def test_karpathy_splits_match_the_official_captions(coco_mini):
    splits = {s: load_dataset("coco-karpathy", root=str(coco_mini), split=s) for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 232, "val": 25, "test": 25}
    assert len(karpathy_dataset(root=coco_mini, split="all")) == 282
    official = coco_dataset(root=coco_mini).references()
    test_refs = splits["test"].references()
    assert set(test_refs) <= set(official)
    assert all(test_refs[i] == official[i] for i in test_refs)
    item = splits["test"][0]
    assert item.path == coco_mini / "images" / item.path.name and item.load_image().mode == "RGB"


def test_coco_reads_gzipped_captions_without_images(coco_val_captions):
    data = coco_dataset(annotations=coco_val_captions, split="val")
    assert len(data) == 40504 and len(data.captions()) == 202654
    assert data[0].path.name.startswith("COCO_val2014_")


def _write(path: Path, doc) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


@pytest.mark.parametrize(
    "doc, key",
    [
        ('{"images": [', "not valid JSON"),
        ({"images": []}, "'annotations'"),
        ({"annotations": []}, "'images'"),
        ({"images": [{"id": 1}], "annotations": []}, "'file_name'"),
        ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1}]}, "'caption'"),
        ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "caption": "x"}]}, "'image_id'"),
    ],
)
def test_malformed_coco_file_names_file_and_key(tmp_path, doc, key):
    path = _write(tmp_path / "captions.json", doc)
    with pytest.raises(DataError) as err:
        coco_dataset(root=tmp_path)
    assert str(path) in str(err.value) and key in str(err.value)


def test_malformed_karpathy_file_names_file_and_key(tmp_path):
    entry = {"filepath": "x", "filename": "a.jpg", "split": "test", "cocoid": 5, "sentences": [{"tokens": ["a"]}]}
    path = _write(tmp_path / "dataset_coco.json", {"images": [entry]})
    with pytest.raises(DataError, match=r"dataset_coco\.json: images\[0\]\.sentences\[0\] has no key 'raw'"):
        karpathy_dataset(root=tmp_path, split="test")
    _write(path, {"dataset": "coco"})
    with pytest.raises(DataError, match="'images'"):
        karpathy_dataset(root=tmp_path, split="test")
    with pytest.raises(DataError, match="splits"):
        karpathy_dataset(root=tmp_path, split="testing")


@pytest.mark.parametrize("name", ["coco", "coco-karpathy", "folder"])
def test_missing_root_says_which_flag_to_pass(name):
    with pytest.raises(DataError, match="--data-root"):
        load_dataset(name)


def test_missing_files_name_flags_that_exist(tmp_path):
    """The command-line form of a data set option is --set data.KEY=VALUE; there is no --annotations."""
    with pytest.raises(DataError) as err:
        load_dataset("coco", root=str(tmp_path), split="val")
    assert "--set data.annotations=PATH" in str(err.value) and "(--annotations)" not in str(err.value)
    with pytest.raises(DataError, match=r"--set data\.annotations=PATH"):
        load_dataset("coco")
    with pytest.raises(DataError, match=r"--set data\.captions=PATH"):
        load_dataset("folder", root=str(tmp_path))


COCO_DOC = {
    "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
    "annotations": [{"image_id": 1, "id": 1, "caption": "a dog"}, {"image_id": 2, "id": 2, "caption": "a cat"}],
}


def test_coco_file_without_splits_says_every_split_is_the_whole_file(tmp_path, caplog):
    path = _write(tmp_path / "captions.json", COCO_DOC)
    by_split = {}
    for split in ("train", "test"):
        caplog.clear()
        with caplog.at_level("WARNING"):
            by_split[split] = [it.image_id for it in load_dataset("coco", root=str(tmp_path), split=split)]
        said = [r.getMessage() for r in caplog.records if "defines no splits" in r.getMessage()]
        assert len(said) == 1, said  # once per load
        assert str(path) in said[0] and f"split {split!r} is the whole file (2 images)" in said[0]
        assert "coco-karpathy" in said[0]
    assert by_split["train"] == by_split["test"] == [1, 2]  # what is returned does not change


def test_coco_file_of_one_split_loads_that_split_quietly(tmp_path, caplog):
    (tmp_path / "annotations").mkdir()
    _write(tmp_path / "annotations" / "captions_val2014.json", COCO_DOC)
    with caplog.at_level("WARNING"):
        assert len(load_dataset("coco", root=str(tmp_path), split="val")) == 2
        assert len(coco_dataset(annotations=tmp_path / "annotations" / "captions_val2014.json", split="val2014")) == 2
    assert not [r for r in caplog.records if "defines no splits" in r.getMessage()]


def test_coco_reads_gzip_by_its_bytes_not_its_name(tmp_path):
    import gzip

    (tmp_path / "captions.json").write_bytes(gzip.compress(json.dumps(COCO_DOC).encode()))
    assert len(coco_dataset(root=tmp_path, split="all")) == 2


# -- folder -----------------------------------------------------------------------------------------------
def _tiny_image(path: Path, colour=(200, 30, 30)) -> Path:
    PIL.Image.new("RGB", (12, 9), colour).save(path)
    return path


def test_folder_with_jsonl(tmp_path):
    _tiny_image(tmp_path / "cat.png")
    _tiny_image(tmp_path / "dog.jpg", (10, 10, 200))
    lines = [
        {"file": "cat.png", "caption": "a cat", "split": "train"},
        {"file": "dog.jpg", "captions": ["a dog", "a blue dog"], "split": "val"},
        {"file": "cat.png", "caption": "a red cat", "split": "train"},
    ]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    every = load_dataset("folder", root=str(tmp_path), split="all")
    assert every.references() == {"cat.png": ["a cat", "a red cat"], "dog.jpg": ["a dog", "a blue dog"]}
    val = folder_dataset(root=tmp_path, split="val")
    assert [it.image_id for it in val] == ["dog.jpg"]
    assert val[0].load_image().size == (12, 9)
    with pytest.raises(DataError, match="train, val"):
        folder_dataset(root=tmp_path, split="test")


def test_folder_with_csv_and_hash_split(tmp_path):
    rows = ["file,caption", *(f"img{i}.jpg,a picture number {i}" for i in range(200)), 'img0.jpg,"a second caption, quoted"']
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    every = folder_dataset(root=tmp_path, split="all")
    assert len(every) == 200 and every[0].captions == ["a picture number 0", "a second caption, quoted"]
    parts = {s: {it.image_id for it in folder_dataset(root=tmp_path, split=s)} for s in ("train", "val", "test")}
    assert set().union(*parts.values()) == {it.image_id for it in every}
    assert sum(len(p) for p in parts.values()) == 200
    assert 160 <= len(parts["train"]) <= 195 and parts["val"] and parts["test"]
    assert all(hash_split(f) == s for s, files in parts.items() for f in files)
    # the split of a file depends on its name alone: a bigger folder keeps the old assignment
    (tmp_path / "captions.csv").write_text("\n".join(rows[:50]) + "\n")
    assert {it.image_id for it in folder_dataset(root=tmp_path, split="val")} <= parts["val"]


@pytest.mark.parametrize(
    "name, text, where",
    [
        ("captions.csv", "file,caption\na.jpg,a cat\nb.jpg,\n", r"captions\.csv:3: key 'caption'"),
        ("captions.csv", "file,caption\na.jpg,a cat,extra\n", r"captions\.csv:2: more fields"),
        ("captions.csv", "name,text\na.jpg,a cat\n", r"captions\.csv:1: the header has no column 'file'"),
        ("captions.jsonl", '{"file": "a.jpg", "caption": "x"}\n{"file": "b.jpg", \n', r"captions\.jsonl:2: not valid JSON"),
        ("captions.jsonl", '{"file": "a.jpg"}\n', r"captions\.jsonl:1: missing key 'caption'"),
        ("captions.jsonl", '{"caption": "x"}\n', r"captions\.jsonl:1: missing key 'file'"),
    ],
)
def test_folder_errors_name_file_and_line(tmp_path, name, text, where):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=where):
        folder_dataset(root=tmp_path, split="all")


@pytest.mark.parametrize("name, line", [("captions.csv", "{file},{caption}"), ("captions.jsonl", '{{"file": "{file}", "caption": "{caption}"}}')])
def test_folder_reads_utf8_with_a_byte_order_mark(tmp_path, name, line):
    """Excel's "CSV UTF-8" starts the file with a BOM; it is not part of the first column's name."""
    header = ["file,caption"] if name.endswith(".csv") else []
    text = "\n".join(header + [line.format(file="café.jpg", caption="un café crème")]) + "\n"
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    ds = folder_dataset(root=tmp_path, split="all")
    assert ds.references() == {"café.jpg": ["un café crème"]}


@pytest.mark.parametrize("name", ["captions.csv", "captions.jsonl"])
def test_folder_file_not_utf8_is_named_with_its_line(tmp_path, name):
    lines = ["file,caption", "a.jpg,a cat"] if name.endswith(".csv") else ['{"file": "a.jpg", "caption": "a cat"}']
    lines.append("b.jpg,un café" if name.endswith(".csv") else '{"file": "b.jpg", "caption": "un café"}')
    (tmp_path / name).write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=rf"{re.escape(name)}:{len(lines)}: not UTF-8 .* Save it as UTF-8"):
        folder_dataset(root=tmp_path, split="all")


# -- images and loaders -----------------------------------------------------------------------------------
class ToTensorWithPid:
    """A transform that also records which process decoded the image."""

    def __call__(self, image: PIL.Image.Image) -> torch.Tensor:
        arr = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255
        return torch.cat([arr.flatten(), torch.tensor([float(os.getpid())])])


@pytest.mark.parametrize("workers", [0, 2])
def test_image_dataset_in_a_dataloader(workers):
    data = small_shapes("test", image_size=16)
    loader = torch.utils.data.DataLoader(ImageDataset(data, ToTensorWithPid()), batch_size=8, num_workers=workers)
    seen = []
    for idx, batch in loader:
        for i, row in zip(idx.tolist(), batch):
            expected = np.asarray(data[i].load_image(), dtype=np.float32).transpose(2, 0, 1).flatten() / 255
            assert torch.allclose(row[:-1], torch.from_numpy(expected))
            seen.append(i)
            assert (int(row[-1]) != os.getpid()) == (workers > 0)  # decoded in the workers
    assert sorted(seen) == list(range(len(data)))


def _png_header(path: Path, width: int, height: int) -> Path:
    """A tiny 1-bit PNG that claims ``width`` × ``height`` pixels (a decompression bomb's header)."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_open_image_names_bad_files(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "gone.jpg")) + ".*does not exist"):
        open_image(tmp_path / "gone.jpg")
    (tmp_path / "garbage.jpg").write_bytes(os.urandom(2000))
    with pytest.raises(DataError, match="garbage.jpg.*cannot be decoded"):
        open_image(tmp_path / "garbage.jpg")
    good = _tiny_image(tmp_path / "good.jpg")
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match="cut.jpg"):
        open_image(tmp_path / "cut.jpg")
    bomb = _png_header(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(DataError) as err:
        open_image(bomb)
    for part in ("bomb.png", "10,000,000,000 pixels", "MAX_IMAGE_PIXELS", "raise the limit"):
        assert part in str(err.value)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 20)  # a 12×9 image is now over twice the limit
    with pytest.raises(DataError, match=r"good.jpg has 108 pixels \(12×9\), over the limit of 40.*--max-image-pixels"):
        open_image(good)


def test_open_image_gives_rgb(tmp_path):
    PIL.Image.new("L", (5, 4), 128).save(tmp_path / "grey.png")
    PIL.Image.new("RGBA", (5, 4), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert open_image(tmp_path / "grey.png").getpixel((0, 0)) == (128, 128, 128)
    assert open_image(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)  # transparent → white


def test_skip_bad_images_counts_and_skips(tmp_path):
    _tiny_image(tmp_path / "a.png")
    _tiny_image(tmp_path / "d.png")
    (tmp_path / "c.jpg").write_bytes(b"not a jpeg at all")
    names = ["a.png", "b.png", "c.jpg", "d.png"]  # b.png does not exist
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps({"file": n, "caption": "x"}) + "\n" for n in names))
    data = folder_dataset(root=tmp_path, split="all")
    to_tensor = ToTensorWithPid()

    with pytest.raises(DataError, match="b.png"):
        ImageDataset(data, to_tensor)[1]
    images = ImageDataset(data, to_tensor, skip_bad_images=True)
    loader = torch.utils.data.DataLoader(images, batch_size=2, num_workers=2, collate_fn=collate_skip_none)
    kept = [(idx.tolist(), None if batch is None else batch.shape[0]) for idx, batch in loader]
    assert kept == [([0], 1), ([3], 1)]
    assert images.bad_images == 2
    idx, batch = collate_skip_none([(1, None), (2, None)])
    assert idx.numel() == 0 and batch is None


# -- the registry -----------------------------------------------------------------------------------------
def test_datasets_are_registered_and_options_checked():
    import zoo

    assert {"shapes", "coco", "coco-karpathy", "folder"} <= set(zoo.get_registry().names("dataset"))
    data = load_dataset("shapes", split="val", **SMALL)
    assert isinstance(data, CaptionDataset) and len(data) == 20
    with pytest.raises(DataError, match="no option 'num_images'.*num_train"):
        load_dataset("shapes", num_images=3)
    with pytest.raises(DataError, match="'shapes': option 'image_size' must be an integer 16-1024, got '64'"):
        load_dataset("shapes", image_size="64")
