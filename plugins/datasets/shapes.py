"""``shapes``: the embedded default data set, generated on the fly, deterministic, no download.

Why it exists: every command and test needs a data set that is always there, trains on a CPU in minutes,
and still rewards a model for knowing *where* things are, so that attention decoders can show their worth.

The generator
-------------
* **Scene.** A 3×3 grid of cells on a plain light background (one of three near-white tints, never
  mentioned). 1-4 shapes (weights 15/30/30/25 %) go into distinct cells. Each shape is one of
  ``SHAPES`` (circle, square, triangle, diamond, star) in one of ``COLOURS`` (red, orange, yellow, green,
  blue, purple, black); with probability 1/4 a shape copies the kind, and independently the colour, of an
  earlier one, so counts ("two red circles") occur often. Size and position jitter inside the cell are
  integers on a 96-unit grid, so a scene is discrete and does not depend on the output size; shapes never
  leave their cell or overlap. No rotation (a rotated square would be a diamond).
* **Captions** (``captions_per_image``, default 5, all distinct), from templates over a ~50-word
  vocabulary (45 words), at most 16 words each (the usual training cut). Every image gets an inventory
  ("two red circles and a blue square"), where (up to) two of its shapes are ("a red circle in the top
  left and a blue square at the bottom"), and, when two shapes look different, a relation between them
  ("a blue square to the left of a green triangle", "... above ..."). The rest are drawn from shape-only
  and colour-only counts ("two circles and a square", "two red shapes and a blue shape"), the total
  count, one shape's position, and more relations. Positions are grid cells: the top row is "top", the
  left column "left", the centre "in the middle"; "left of" means a smaller column, "above" a smaller
  row. Every caption is true of its image, and most can only be got right by looking at where things
  are.
* **Randomness.** Each image has its own ``random.Random`` seeded with sha256("shapes", seed, split,
  index), so any image can be regenerated alone and the sequence never depends on Python's hash seed.
* **Splits.** ``val``, ``test`` and ``train`` are generated in that order and a scene already drawn
  (in any split) is redrawn, so no image appears twice and val/test never change when ``num_train``
  does. Image ids are ``index`` (train), ``1_000_000 + index`` (val), ``2_000_000 + index`` (test), so
  references from different splits never collide.
* **Rendering** (``render_scene``) uses PIL ImageDraw at 4× the output size and box-downsamples, i.e.
  anti-aliased edges; default output 64×64 RGB (``image_size``). Images are rendered when loaded, in
  DataLoader workers, and never stored.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from PIL import Image, ImageDraw

import zoo
from zoo.data import CaptionDataset, Item, int_option
from zoo.errors import DataError

GENERATOR_VERSION = 1

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (245, 135, 20),
    "yellow": (230, 195, 0),
    "green": (35, 155, 60),
    "blue": (35, 80, 220),
    "purple": (135, 55, 180),
    "black": (25, 25, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star")
BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((246, 246, 246), (250, 244, 232), (236, 242, 248))
NUMBERS = ("zero", "one", "two", "three", "four")
COUNT_WEIGHTS = (15, 30, 30, 25)  # 1, 2, 3, 4 shapes
UNITS = 96  # scene coordinates: integers on a 96×96 grid, 32 units per cell
CELL = UNITS // 3
MIN_HALF, MAX_HALF = 9, 13  # half-size of a shape, in units
ID_OFFSETS = {"train": 0, "val": 1_000_000, "test": 2_000_000}
SPLIT_ORDER = ("val", "test", "train")

POSITIONS: dict[tuple[int, int], tuple[str, ...]] = {
    (0, 0): ("in the top left", "in the top left corner"),
    (0, 1): ("at the top", "in the top middle"),
    (0, 2): ("in the top right", "in the top right corner"),
    (1, 0): ("on the left",),
    (1, 1): ("in the middle", "in the center"),
    (1, 2): ("on the right",),
    (2, 0): ("in the bottom left", "in the bottom left corner"),
    (2, 1): ("at the bottom", "in the bottom middle"),
    (2, 2): ("in the bottom right", "in the bottom right corner"),
}


@dataclass(frozen=True, order=True)
class Shape:
    """One shape: ``row``/``col`` are its grid cell; ``x``, ``y`` (centre) and ``half`` in 1/96 units."""

    row: int
    col: int
    shape: str
    colour: str
    x: int
    y: int
    half: int


@dataclass(frozen=True)
class Scene:
    """What an image shows; shapes in reading order (row, then column)."""

    shapes: tuple[Shape, ...]
    background: int  # index into BACKGROUNDS


# -- scenes -----------------------------------------------------------------------------------------------
def item_rng(seed: int, split: str, index: int) -> random.Random:
    """The image's own generator, independent of every other image and of Python's hash seed."""
    digest = hashlib.sha256(f"shapes/{seed}/{split}/{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def make_scene(rng: random.Random) -> Scene:
    n = rng.choices((1, 2, 3, 4), weights=COUNT_WEIGHTS)[0]
    cells = rng.sample(range(9), n)
    shapes: list[Shape] = []
    for cell in cells:
        row, col = divmod(cell, 3)
        kind = rng.choice(SHAPES)
        colour = rng.choice(list(COLOURS))
        if shapes and rng.random() < 0.25:
            kind = rng.choice(shapes).shape
        if shapes and rng.random() < 0.25:
            colour = rng.choice(shapes).colour
        half = rng.randint(MIN_HALF, MAX_HALF)
        slack = CELL // 2 - half - 1
        x = col * CELL + CELL // 2 + rng.randint(-slack, slack)
        y = row * CELL + CELL // 2 + rng.randint(-slack, slack)
        shapes.append(Shape(row, col, kind, colour, x, y, half))
    return Scene(tuple(sorted(shapes)), rng.randrange(len(BACKGROUNDS)))


# -- captions ---------------------------------------------------------------------------------------------
def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _np(count: int, words: list[str], noun: str) -> str:
    """'a red circle', 'an orange star', 'two red circles', 'a shape'."""
    body = " ".join([*words, noun + ("s" if count > 1 else "")])
    return f"{_article(body)} {body}" if count == 1 else f"{NUMBERS[count]} {body}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


Key = tuple[str, ...]


def _inventory(scene: Scene, key: Callable[[Shape], Key], noun: Callable[[Key], tuple[list[str], str]]) -> str:
    counts = Counter(key(s) for s in scene.shapes)  # insertion order = reading order
    return _join([_np(c, *noun(k)) for k, c in counts.items()])


def full_inventory(scene: Scene) -> str:
    return _inventory(scene, lambda s: (s.colour, s.shape), lambda k: ([k[0]], k[1]))


def shape_inventory(scene: Scene) -> str:
    return _inventory(scene, lambda s: (s.shape,), lambda k: ([], k[0]))


def colour_inventory(scene: Scene) -> str:
    return _inventory(scene, lambda s: (s.colour,), lambda k: ([k[0]], "shape"))


def _ref(scene: Scene, s: Shape, rng: random.Random, definite_ok: bool) -> str:
    unique = sum(1 for o in scene.shapes if (o.colour, o.shape) == (s.colour, s.shape)) == 1
    name = f"{s.colour} {s.shape}"
    if definite_ok and unique and rng.random() < 0.5:
        return f"the {name}"
    return f"{_article(name)} {name}"


def _where(s: Shape, rng: random.Random, corner: bool = True) -> str:
    phrases = POSITIONS[(s.row, s.col)]
    return rng.choice(phrases if corner else [p for p in phrases if not p.endswith("corner")])


def where_two(scene: Scene, rng: random.Random) -> str:
    """Where up to two shapes are (two keep the caption within 16 words)."""
    chosen = sorted(rng.sample(scene.shapes, min(2, len(scene.shapes))))
    return _join([f"{_ref(scene, s, rng, False)} {_where(s, rng, corner=False)}" for s in chosen])


def where_one(scene: Scene, rng: random.Random) -> str:
    s = rng.choice(scene.shapes)
    ref, where = _ref(scene, s, rng, True), _where(s, rng)
    if ref.startswith("the "):
        return f"{ref} is {where}"
    return rng.choice((f"{ref} {where}", f"there is {ref} {where}", f"{where} there is {ref}"))


def where_vague(scene: Scene, rng: random.Random) -> str:
    """Position with only the kind or only the colour: 'a circle in the top left'."""
    s = rng.choice(scene.shapes)
    word = s.shape if rng.random() < 0.5 else f"{s.colour} shape"
    return f"{_article(word)} {word} {_where(s, rng)}"


def relation(scene: Scene, rng: random.Random) -> str | None:
    # shapes sit in distinct cells; a pair that looks alike ("a red circle above a red circle") says little
    pairs = [(a, b) for a in scene.shapes for b in scene.shapes if (a.colour, a.shape) != (b.colour, b.shape)]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    options = []
    if a.col != b.col:
        options.append("to the left of" if a.col < b.col else "to the right of")
    if a.row != b.row:
        options.append("above" if a.row < b.row else "below")
    rel = rng.choice(options)
    ra, rb = _ref(scene, a, rng, True), _ref(scene, b, rng, True)
    if ra.startswith("the "):
        return f"{ra} is {rel} {rb}"
    if rel.startswith("to the") and rng.random() < 0.3:
        rel = rel[len("to the ") :]  # "a blue square left of a green triangle"
    return rng.choice((f"{ra} {rel} {rb}", f"there is {ra} {rel} {rb}"))


def total_count(scene: Scene, rng: random.Random) -> str:
    n = len(scene.shapes)
    if n == 1:
        return rng.choice(("one shape", f"a single {scene.shapes[0].colour} {scene.shapes[0].shape}"))
    return rng.choice((f"{NUMBERS[n]} shapes", f"there are {NUMBERS[n]} shapes"))


_ARTICLES = re.compile(r"\b(the|an)\b")


def describe(scene: Scene, rng: random.Random, n: int = 5) -> list[str]:
    """``n`` distinct true captions: an inventory, where two shapes are, a relation (if any), then others."""
    inventory = full_inventory(scene)
    if rng.random() < 0.3:
        inventory = ("there is " if inventory.startswith("a") else "there are ") + inventory
    must = [inventory, where_two(scene, rng), relation(scene, rng)]
    out: list[str] = []
    seen: set[str] = set()

    def add(caption: str | None) -> None:
        key = caption and _ARTICLES.sub("a", caption)  # "the red circle is ..." ≈ "a red circle is ..."
        if key and key not in seen:
            seen.add(key)
            out.append(caption)  # type: ignore[arg-type]

    for c in must:
        add(c)
    extra: list[Callable[[], str | None]] = [
        lambda: shape_inventory(scene),
        lambda: colour_inventory(scene),
        lambda: total_count(scene, rng),
        lambda: where_one(scene, rng),
        lambda: where_vague(scene, rng),
        lambda: relation(scene, rng),
        lambda: full_inventory(scene),
    ]
    weights = (2, 2, 1, 3, 2, 4, 1)
    for _ in range(200):
        if len(out) >= n:
            break
        add(rng.choices(extra, weights=weights)[0]())
    if len(out) < n:  # cannot happen with 5 captions; guards a large captions_per_image
        raise DataError(f"shapes: cannot make {n} distinct captions for a scene; use captions_per_image ≤ 5")
    rng.shuffle(out)
    return out[:n]


# -- rendering --------------------------------------------------------------------------------------------
def _points(kind: str, x: float, y: float, h: float) -> list[tuple[float, float]]:
    if kind == "triangle":
        return [(x, y - h), (x + h, y + 0.75 * h), (x - h, y + 0.75 * h)]
    if kind == "diamond":
        return [(x, y - h), (x + 0.8 * h, y), (x, y + h), (x - 0.8 * h, y)]
    if kind == "star":
        pts = []
        for i in range(10):
            r = h if i % 2 == 0 else 0.45 * h
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((x + r * math.cos(a), y + r * math.sin(a)))
        return pts
    raise ValueError(kind)


def render_scene(scene: Scene, image_size: int = 64, supersample: int = 4) -> Image.Image:
    """Draw ``scene`` as an RGB image of ``image_size``² pixels (anti-aliased by supersampling)."""
    big = image_size * supersample
    im = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(im)
    k = big / UNITS
    for s in scene.shapes:
        x, y, h, fill = s.x * k, s.y * k, s.half * k, COLOURS[s.colour]
        if s.shape == "circle":
            draw.ellipse((x - h, y - h, x + h, y + h), fill=fill)
        elif s.shape == "square":
            q = 0.85 * h
            draw.rectangle((x - q, y - q, x + q, y + q), fill=fill)
        else:
            draw.polygon(_points(s.shape, x, y, h), fill=fill)
    if supersample > 1:
        im = im.resize((image_size, image_size), Image.Resampling.BOX)
    return im


# -- the data set -----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _generate(seed: int, num_train: int, num_val: int, num_test: int, per_image: int) -> dict[str, tuple]:
    """All three splits at once (val, test, then train, redrawing any scene seen before); cached, since a
    run loads train and val and each needs the earlier splits' scenes anyway."""
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    seen: set[Scene] = set()
    out: dict[str, tuple] = {}
    for split in SPLIT_ORDER:
        rows = []
        for index in range(sizes[split]):
            rng = item_rng(seed, split, index)
            scene = make_scene(rng)
            while scene in seen:
                scene = make_scene(rng)
            seen.add(scene)
            rows.append((scene, tuple(describe(scene, rng, per_image))))
        out[split] = tuple(rows)
    return out


def generate_split(
    split: str,
    seed: int = 0,
    num_train: int = 4000,
    num_val: int = 250,
    num_test: int = 250,
    captions_per_image: int = 5,
) -> list[tuple[Scene, list[str]]]:
    """The scenes and captions of ``split`` (tests and tools use it to check captions against scenes)."""
    if split not in ID_OFFSETS:
        raise DataError(f"shapes has splits train, val and test; got split {split!r}")
    for key, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
        int_option("shapes", key, value, 0, 999_999)  # ids of the next split start at 1,000,000
    int_option("shapes", "captions_per_image", captions_per_image, 1, 5)
    int_option("shapes", "seed", seed, 0)
    rows = _generate(seed, num_train, num_val, num_test, captions_per_image)[split]
    return [(scene, list(captions)) for scene, captions in rows]


def shapes_dataset(
    root: str | None = None,
    split: str = "train",
    image_size: int = 64,
    num_train: int = 4000,
    num_val: int = 250,
    num_test: int = 250,
    seed: int = 0,
    captions_per_image: int = 5,
    max_images: int | None = None,
) -> CaptionDataset:
    """Generated images of 1-4 coloured shapes with 5 captions each (colours, counts, positions,
    relations); no download, deterministic from ``seed``, learnable on a CPU in minutes.

    ``root`` is ignored (nothing is read from disk). Splits: train, val, test; ``max_images`` keeps the
    first images of the split (the same images whatever the limit)."""
    int_option("shapes", "image_size", image_size, 16, 1024)
    int_option("shapes", "max_images", max_images)
    rows = generate_split(split, seed, num_train, num_val, num_test, captions_per_image)[:max_images]
    offset = ID_OFFSETS[split]
    items = [
        Item(offset + i, captions, render=functools.partial(render_scene, scene, image_size))
        for i, (scene, captions) in enumerate(rows)
    ]
    info = {
        "generator": f"shapes-v{GENERATOR_VERSION}",
        "seed": seed,
        "image_size": image_size,
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
    }
    return CaptionDataset("shapes", split, items, root=None, info=info)


@zoo.hookimpl
def zoo_register(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add_dataset("shapes", shapes_dataset)
