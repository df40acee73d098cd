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
