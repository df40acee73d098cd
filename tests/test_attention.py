"""Attention through the decoder contract: ``gru-attn``'s weights over the grid, kept by the beam search
for the winning hypothesis, returned by ``generate(..., return_attention=True)``, laid on the image (CNN
and ViT grids) and drawn by ``zoo caption --attention``."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import zoo
from tests.helpers import CAPTIONS, images, tiny_model
from zoo.views.attention_figure import upsample
from zoo.cli import main
from zoo.errors import ZooError
from zoo.generation.beam import beam_search

# the partially trained decoders (captions of varied lengths) and the features of the beam search tests
from tests.test_beam_search import BOS, EOS, N, features, one_thread, partially_trained  # noqa: E402,F401


@pytest.fixture(scope="module")
def decoder() -> zoo.Decoder:
    return partially_trained("gru-attn")


@torch.no_grad()
def teacher_forced_attention(dec: zoo.Decoder, feats: zoo.Features, tokens: list[int]) -> torch.Tensor:
    """(len(tokens), N): the weights behind each token when the caption is fed back step by step."""
    memory = dec.prepare(feats)
    state = dec.init_state(memory)
    rows = []
    for prev in [BOS, *tokens[:-1]]:
        _, state = dec.step(torch.tensor([prev]), state, memory)
        rows.append(dec.last_attention(state)[0])
    return torch.stack(rows)


def test_beam_attention_is_the_winning_hypothesis(decoder: zoo.Decoder) -> None:
    feats = features(6, seed=3)
    kw = dict(bos_id=BOS, eos_id=EOS, beam_size=3, max_len=10)
    plain = beam_search(decoder, feats, **kw)
    hyps = beam_search(decoder, feats, **kw, return_attention=True)
    assert [h.tokens for h in hyps] == [h.tokens for h in plain]  # tracking changes nothing else
    assert all(h.attention is None for h in plain)  # and costs nothing when not asked for
    assert len({len(h.tokens) for h in hyps}) > 1  # varied lengths: images leave the search at different steps
    for i, h in enumerate(hyps):
        expected = teacher_forced_attention(decoder, feats.index_select(torch.tensor([i])), h.tokens)
        assert h.attention.shape == (len(h.tokens), N)
        torch.testing.assert_close(h.attention, expected, atol=1e-5, rtol=0)


def test_beam_one_attention_equals_greedy_unrolled_by_hand(decoder: zoo.Decoder) -> None:
    feats = features(5, seed=4)
    hyps = beam_search(decoder, feats, bos_id=BOS, eos_id=EOS, beam_size=1, max_len=10, return_attention=True)
    memory = decoder.prepare(feats)
    state = decoder.init_state(memory)
    prev = torch.full((5,), BOS)
    tokens: list[list[int]] = [[] for _ in range(5)]
    weights: list[list[torch.Tensor]] = [[] for _ in range(5)]
    with torch.no_grad():
        for _ in range(10):
            logits, state = decoder.step(prev, state, memory)
            prev = logits.argmax(-1)
            for i, w in enumerate(prev.tolist()):
                if not tokens[i] or tokens[i][-1] != EOS:
                    tokens[i].append(w)
                    weights[i].append(decoder.last_attention(state)[i])
    assert [h.tokens for h in hyps] == tokens
    for h, w in zip(hyps, weights):
        torch.testing.assert_close(h.attention, torch.stack(w), atol=1e-6, rtol=0)


def test_generate_returns_weights_summing_to_one_per_token() -> None:
    model = tiny_model("gru-attn", attention_size=8).eval()
    out = model.generate(images(3, size=64), beam_size=2, max_len=8, return_attention=True)
    plain = model.generate(images(3, size=64), beam_size=2, max_len=8)
    assert [a.caption for a in out] == plain
    for a in out:
        assert a.grid_shape == (2, 2)  # resnet10t at 64x64: a 2x2 map (stride 32)
        assert a.weights.shape == (len(a.words), 4) and a.maps().shape == (len(a.words), 2, 2)
        torch.testing.assert_close(a.weights.sum(-1), torch.ones(len(a.words)))
        assert (a.weights >= 0).all()
        content = [w for w in a.words if w != "<end>"]
        assert " ".join(content) == a.caption  # one label per generated token, the caption's words


def test_a_decoder_without_attention_is_named() -> None:
    model = tiny_model("gru").eval()
    with pytest.raises(ZooError, match=r"decoder 'gru' has no attention.*gru-attn"):
        model.generate(images(1), return_attention=True)


def test_vit_grid_leaves_out_the_class_token_and_keeps_rows_and_columns() -> None:
    """test_vit (16-pixel patches, one class token) at 32x64: 2 rows of 4 patches, not 9 tokens, not 4x2."""
    enc = zoo.create_encoder("test_vit", img_size=(32, 64))
    feats = enc(torch.zeros(1, 3, 32, 64))
    assert feats.grid.shape[1] == 8
    assert enc.grid_shape(8) == (2, 4) and enc.grid_shape(8, (32, 64)) == (2, 4)
    cnn = zoo.create_encoder("resnet10t")
    assert cnn.grid_shape(6, (64, 96)) == (2, 3)  # a wide CNN map: 2 rows of 3
    model = zoo.create_model(encoder="test_vit", decoder="gru-attn", tokenizer=zoo.create_tokenizer("word", CAPTIONS, min_count=0),
                             encoder_kwargs={"img_size": (32, 64)}, decoder_kwargs={"embed_size": 8, "hidden_size": 8, "attention_size": 8})
    (a,) = model.generate(torch.randn(1, 3, 32, 64), max_len=4, return_attention=True)
    assert a.grid_shape == (2, 4) and a.weights.shape[1] == 8


def test_a_grid_cell_lands_on_its_pixels() -> None:
    """Cell (r, c) of a (2, 4) grid peaks in pixel block r, c of a 32x64 image, smoothly."""
    for i in range(8):
        one_hot = torch.zeros(1, 8)
        one_hot[0, i] = 1.0
        heat = upsample(one_hot.view(1, 2, 4), (32, 64))[0]
        r, c = divmod(int(heat.argmax()), 64)
        assert (r // 16, c // 16) == divmod(i, 4)
        assert len(heat.unique()) > 8  # smooth (bilinear), not 8 flat blocks


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name in ("gru-attn", "gru"):
        model = tiny_model(name, **({"attention_size": 8} if name == "gru-attn" else {}))
        out[name] = str(zoo.save(model, d / f"{name}.safetensors"))
    Image.new("RGB", (48, 40), (200, 30, 30)).save(d / "photo.png")
    out["photo"] = str(d / "photo.png")
    return out


def test_caption_attention_writes_a_figure(checkpoints, tmp_path, capsys) -> None:
    fig = tmp_path / "att.png"
    assert main(["caption", checkpoints["gru-attn"], checkpoints["photo"], "--attention", str(fig)]) == 0
    caption = capsys.readouterr().out.split("\t")[1].strip()
    with Image.open(fig) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 150
    assert caption  # the caption is still printed


def test_caption_attention_refuses_a_decoder_without_attention(checkpoints, tmp_path, capsys) -> None:
    fig = tmp_path / "att.png"
    assert main(["caption", checkpoints["gru"], checkpoints["photo"], "--attention", str(fig)]) == 2
    err = capsys.readouterr().err
    assert "decoder 'gru' has no attention" in err and "Traceback" not in err
    assert not fig.exists()


def test_a_long_caption_title_stays_inside_the_figure() -> None:
    """A 20-word caption is wrapped, not drawn off both edges of the figure."""
    from zoo.views.attention_figure import attention_figure
    from zoo.generation.attention import CaptionAttention

    words = ["there", "four", "<unk>", "shapes"] * 5
    a = CaptionAttention(" ".join(words), words, torch.full((20, 4), 0.25), (2, 2))
    fig = attention_figure(torch.rand(3, 32, 32), a)
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width


# -- which part of the image the encoder saw (report thumbnails and strips) -----------------------------
@pytest.mark.parametrize("size", [(64, 64), (80, 48), (48, 90), (200, 150)])
def test_encoder_crop_is_where_the_transformed_pixels_come_from(size) -> None:
    import numpy as np

    from zoo.views.attention_figure import encoder_crop

    model = tiny_model("gru-attn")  # timm's eval transform at 32 px: shorter side to 36, centre crop 32
    tf = model.transform(False)
    W, H = size
    # red encodes x, green y, of each pixel's centre: the transformed image's corners say where they came from
    ramp = np.zeros((H, W, 3), dtype=np.uint8)
    ramp[..., 0] = np.round((np.arange(W) + 0.5) / W * 255)[None, :]
    ramp[..., 1] = np.round((np.arange(H) + 0.5) / H * 255)[:, None]
    view = model.encoder.unnormalize(tf(Image.fromarray(ramp))[None])[0].permute(1, 2, 0).numpy()
    crop = encoder_crop(tf, size)
    assert crop is not None and crop.description == "centre crop 32×32 of the image resized to 36 px on its shorter side"
    x0, y0, x1, y1 = crop.box
    h, w = view.shape[:2]
    mid = h // 2, w // 2
    # a centre pixel's (x, y) as the box maps it, against the ramp's value there (bicubic keeps a ramp linear)
    assert abs(view[mid[0], 4, 0] * W - (x0 + 4.5 * (x1 - x0) / w)) < 1.5
    assert abs(view[mid[0], w - 5, 0] * W - (x0 + (w - 4.5) * (x1 - x0) / w)) < 1.5
    assert abs(view[4, mid[1], 1] * H - (y0 + 4.5 * (y1 - y0) / h)) < 1.5
    assert abs(view[h - 5, mid[1], 1] * H - (y0 + (h - 4.5) * (y1 - y0) / h)) < 1.5
    assert crop.cuts and (x1 - x0) / (y1 - y0) == pytest.approx(1.0, rel=0.02)  # square, up to the resize rounding


def test_encoder_crop_of_a_squash_and_of_an_unknown_step() -> None:
    import torchvision.transforms as T

    from zoo.views.attention_figure import encoder_crop

    squash = encoder_crop(T.Compose([T.Resize((224, 224)), T.ToTensor()]), (640, 480))
    assert squash.box == (0.0, 0.0, 640.0, 480.0) and not squash.cuts
    assert squash.description == "the image resized to 224×224"
    assert encoder_crop(T.Compose([T.RandomCrop(224), T.ToTensor()]), (640, 480)) is None  # not knowable


def test_report_thumbnails_and_strips_show_the_whole_image_with_the_crop_dimmed(tmp_path) -> None:
    import io
    import warnings

    import numpy as np

    from tests.pages import shapes
    from tests.test_pages import embedded
    from zoo.evaluation.model_eval import evaluate_model

    data = shapes(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = evaluate_model(tiny_model("gru-attn"), data, metrics=("cider-d",), tokenize=False, out_dir=tmp_path,
                            progress=False, max_len=4)
    page = ev.report_path.read_text()
    assert "Encoder input: centre crop 32×32 of the image resized to 36 px on its shorter side" in page
    images = embedded(page)["images"]

    def pixels(uri_or_bytes) -> np.ndarray:
        import base64

        raw = uri_or_bytes if isinstance(uri_or_bytes, bytes) else base64.b64decode(uri_or_bytes.split(",", 1)[1])
        return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.float32) / 255

    for im in images:
        item = next(it for it in data if str(it.image_id) == im["id"])
        whole = np.asarray(item.load_image(), dtype=np.float32) / 255  # 64×64; the crop keeps 3.6..60.4
        shown, plain = pixels(im["thumb"]), pixels(ev.thumbnails[im["id"]])
        assert shown.shape == plain.shape == whole.shape  # the whole image, not the crop
        assert np.abs(plain - whole).mean() < 0.03  # the results database keeps the plain thumbnail
        ring = np.ones(whole.shape[:2], dtype=bool)
        ring[3:-3, 3:-3] = False  # outside the crop: 3 px each side
        assert shown[ring].mean() < 0.6 * whole[ring].mean()  # dimmed
        assert np.abs(shown[8:-8, 8:-8] - whole[8:-8, 8:-8]).mean() < 0.03  # inside: as it is
        panel = pixels(im["attention"][0]["uri"])
        assert panel.shape[:2] == (64, 64)  # a strip panel is drawn on the whole image too
        assert panel[ring].mean() < 0.6 * whole[ring].mean()
