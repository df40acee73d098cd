"""Decoding settings through the front door: ``CaptionModel.generate`` with sampling and constraints,
``zoo.generation.options.DecodingOptions`` (checked before decoding, with the flag named; what is recorded and
how files are named)."""

from __future__ import annotations

import argparse

import pytest
import torch

from zoo.generation.options import DecodingOptions, add_decoding_arguments
from zoo.errors import ZooError
from tests.helpers import images, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("gru-attn").eval()


def test_generate_samples_n_captions_per_image_most_probable_first(model) -> None:
    imgs = images(3)
    out = model.generate(imgs, sample=True, n=4, generator=torch.Generator().manual_seed(0))
    assert len(out) == 3 and all(len(caps) == 4 and all(isinstance(c, str) for c in caps) for caps in out)
    s = model.generate_samples(imgs, n=4, generator=torch.Generator().manual_seed(0))
    score = (s.logprobs / s.lengths).view(3, 4)
    texts = model.tokenizer.decode_batch(s.tokens.tolist())
    for i in range(3):
        order = score[i].argsort(descending=True, stable=True).tolist()
        assert out[i] == [texts[i * 4 + j] for j in order]
    assert len({c for caps in out for c in caps}) > 3  # untrained: the samples differ
    one = model.generate(imgs, sample=True, generator=torch.Generator().manual_seed(0))
    assert isinstance(one, list) and all(isinstance(c, str) for c in one)


def test_generate_top_k_one_is_greedy_and_seeds_reproduce(model) -> None:
    imgs = images(3, seed=1)
    assert model.generate(imgs, sample=True, top_k=1) == model.generate(imgs, beam_size=1)
    a = model.generate(imgs, sample=True, n=2, generator=torch.Generator().manual_seed(5))
    b = model.generate(imgs, sample=True, n=2, generator=torch.Generator().manual_seed(5))
    assert a == b


def test_generate_applies_constraints(model) -> None:
    imgs = images(4, seed=2)
    for caps in (model.generate(imgs, beam_size=2, no_repeat_ngram=1, min_len=5, max_len=8),
                 model.generate(imgs, sample=True, no_repeat_ngram=1, min_len=5, max_len=8,
                                generator=torch.Generator().manual_seed(0))):
        for c in caps:
            words = c.split()
            assert len(words) >= 5 and len(set(words)) == len(words), c
    free = model.generate(imgs, beam_size=2, max_len=8)
    assert any(len(set(c.split())) < len(c.split()) or len(c.split()) < 5 for c in free)  # had work to do


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sample=True, temperature=0.0), r"temperature \(--temperature\)"),
        (dict(sample=True, top_p=2.0), r"top_p \(--top-p\)"),
        (dict(sample=True, top_k=-3), r"top_k \(--top-k\)"),
        (dict(n=2), r"n \(-n/--num\) applies to sampling only: add --sample"),
        (dict(temperature=0.5), r"temperature \(--temperature\) applies to sampling only"),
        (dict(min_len=20), r"min_len \(--min-len\) must be smaller than max_len \(--max-len 20\)"),
        (dict(no_repeat_ngram=-1), r"no_repeat_ngram \(--no-repeat-ngram\)"),
        (dict(sample="yes"), r"sample \(--sample\) must be True or False"),
        (dict(beam_size=0), r"beam_size \(--beam\)"),
    ],
)
def test_bad_settings_are_refused_before_decoding(model, kwargs, message) -> None:
    class NoDecoding(Exception):
        pass

    def boom(*a, **k):
        raise NoDecoding

    model_encoder_forward = model.encoder.forward
    model.encoder.forward = boom  # decoding must not even start
    try:
        with pytest.raises(ZooError, match=message):
            model.generate(images(1), **kwargs)
    finally:
        model.encoder.forward = model_encoder_forward


def test_recorded_settings_and_file_tags() -> None:
    assert DecodingOptions().recorded() == {"beam_size": 3, "max_len": 20, "length_penalty": 1.0}
    assert DecodingOptions().tag() == "beam3"
    assert DecodingOptions(beam_size=5, bad_endings=True, no_repeat_ngram=3).recorded() == {
        "beam_size": 5, "max_len": 20, "length_penalty": 1.0, "bad_endings": True, "no_repeat_ngram": 3,
    }
    s = DecodingOptions(sample=True, temperature=0.7, top_p=0.9, n=5, seed=2)
    assert s.recorded() == {"sample": True, "max_len": 20, "temperature": 0.7, "top_k": 0, "top_p": 0.9,
                            "n": 5, "seed": 2, "length_penalty": 1.0}
    assert s.tag() == "sample_t0.7_p0.9_n5_seed2"
    assert DecodingOptions(min_len=5, suppress_unk=True, beam_size=1).tag() == "beam1_min5_nounk"
    for opts in (s, DecodingOptions(beam_size=5, bad_endings=True), DecodingOptions()):
        assert DecodingOptions.from_recorded(opts.recorded()) == opts
    with pytest.raises(ZooError, match="unknown decoding option 'temprature'.*temperature"):
        DecodingOptions.from_mapping({"temprature": 1.0})


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_decoding_arguments(p)
    return p.parse_args(list(argv))


def test_command_line_flags() -> None:
    opts = DecodingOptions.from_args(parse("--sample", "--temperature", "0.5", "--top-k", "4", "-n", "3",
                                           "--bad-endings", "--no-repeat-ngram", "3", "--min-len", "2",
                                           "--suppress-unk", "--sample-seed", "9"))
    assert opts == DecodingOptions(sample=True, temperature=0.5, top_k=4, n=3, seed=9, bad_endings=True,
                                   no_repeat_ngram=3, min_len=2, suppress_unk=True)
    assert DecodingOptions.from_args(parse("--beam", "5")).beam_size == 5
    assert DecodingOptions.from_args(parse()).beam_size == 3
    with pytest.raises(ZooError, match="--beam and --sample exclude each other"):
        DecodingOptions.from_args(parse("--beam", "2", "--sample"))
    with pytest.raises(ZooError, match=r"--top-p"):
        DecodingOptions.from_args(parse("--sample", "--top-p", "0"))


def test_caption_statistics_measure_what_cider_optimisation_distorts(tmp_path) -> None:
    from zoo.evaluation.caption_stats import caption_statistics, read_caption_file

    caps = ["A dog on a couch.", "a man riding a horse with", "a dog on a couch", "two cats"]
    stats = caption_statistics(caps, train_captions=["a dog on a couch", "a cat"])
    assert stats["bad_ending_share"] == 0.25 and stats["copied_share"] == 0.5
    assert stats["mean_length"] == (5 + 6 + 5 + 2) / 4 and stats["vocabulary"] == 10
    assert "copied_share" not in caption_statistics(caps)
    (tmp_path / "t.txt").write_text("a dog\n\na cat\n")
    assert read_caption_file(str(tmp_path / "t.txt")) == ["a dog", "a cat"]
    with pytest.raises(ZooError, match="--train-captions"):
        read_caption_file(str(tmp_path / "missing.txt"))
