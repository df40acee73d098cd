"""zoo.evaluation.cider.CiderD against pycocoevalcap's Cider, per image, on real COCO captions and on the cases
where a vectorised rewrite is most likely to go wrong; and its fixed-corpus mode against a plain
transcription of the formula."""

from __future__ import annotations

import gzip
import json
import math
import random
import warnings
from collections import Counter, defaultdict

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

import zoo.evaluation.cider as zm
from zoo.errors import DataError
from zoo.evaluation.cider import CiderD, DocumentFrequency, SmallCorpusWarning

TOL = 1e-9


@pytest.fixture(scope="module")
def val_captions() -> dict[int, list[str]]:
    """COCO val2014 captions, lower-cased, punctuation left in (both scorers split on whitespace)."""
    from tests.conftest import shared_path

    path = shared_path("coco-captions-val2014", "captions_val2014.json.gz")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    caps: dict[int, list[str]] = defaultdict(list)
    for ann in data["annotations"]:
        caps[ann["image_id"]].append(ann["caption"].lower())
    return dict(caps)


def leave_one_out(caps: dict, ids) -> tuple[dict, dict]:
    """One human caption scored against the image's other captions."""
    return {i: caps[i][1:] for i in ids}, {i: caps[i][:1] for i in ids}


def reference(gts, res, n=4, sigma=6.0, df=None, size=None):
    """CIDEr-D written out with dicts, straight from the formula (independent of both implementations)."""

    def grams(s):
        w = s.split()
        return Counter(tuple(w[i : i + k]) for k in range(1, n + 1) for i in range(len(w) - k + 1))

    if df is None:
        df = Counter(g for refs in gts.values() for g in {g for r in refs for g in grams(r)})
        size = len(gts)
    ref_len = math.log(size)

    def vec(s):
        w = [dict() for _ in range(n)]
        for g, tf in grams(s).items():
            w[len(g) - 1][g] = tf * (ref_len - math.log(max(1.0, df.get(g, 0))))
        return w, [math.sqrt(sum(x * x for x in d.values())) for d in w], max(len(s.split()) - 1, 0)

    out = []
    for key in gts:
        wc, nc, lc = vec(res[key][0])
        total = 0.0
        for r in gts[key]:
            wr, nr, lr = vec(r)
            for k in range(n):
                val = sum(min(x, wr[k].get(g, 0.0)) * wr[k].get(g, 0.0) for g, x in wc[k].items())
                if nc[k] and nr[k]:
                    val /= nc[k] * nr[k]
                total += val * math.exp(-((lc - lr) ** 2) / (2 * sigma**2))
        out.append(10.0 * total / n / len(gts[key]))
    return np.array(out)


def assert_same_as_pycocoevalcap(gts, res):
    want_mean, want = Cider().compute_score(gts, res)
    got_mean, got = CiderD().compute_score(gts, res)
    assert got.shape == (len(gts),)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    assert abs(got_mean - want_mean) <= TOL


def test_matches_pycocoevalcap_on_2000_val2014_images(val_captions):
    ids = random.Random(0).sample(sorted(val_captions), 2000)
    gts, res = leave_one_out(val_captions, ids)
    assert_same_as_pycocoevalcap(gts, res)


EDGE_CASES = {
    "empty": ("", ["a dog runs on the grass", "a brown dog running"]),
    "one word": ("dog", ["a dog runs", "dog"]),
    "three words": ("a dog runs", ["a dog runs on the grass", "the dog runs"]),
    "repeats": ("a dog a dog a dog a dog", ["a dog and a dog", "dog dog dog dog dog"]),
    "repeats in refs": ("the cat sat", ["the the the cat", "cat sat sat sat on the cat sat"]),
    "identical": ("two people ride horses", ["two people ride horses", "two people ride horses"]),
    "empty ref": ("a man", ["", "a man on a bike"]),
    "many refs": ("a red bus", ["a red bus", "a bus", "red bus parked", "the bus is red", "bus", "a red bus on a road", "red"]),
    "unicode": ("a café on the street", ["a café with chairs outside", "people sit at a café  "]),
    "odd spacing": ("  a\tdog\nruns  ", ["a dog\truns", "\x1ca dog"]),
    "long": (" ".join(["a big dog"] * 40), ["a big dog " * 3, "dog"]),
}


@pytest.fixture(params=["default", "lexsort", "hash-collisions"])
def code_path(request, monkeypatch):
    """The fallbacks a normal call rarely takes: the lexsort used when the packed sort key does not fit
    64 bits, and words that lose their hash slot in the tokenizer."""
    if request.param == "lexsort":
        monkeypatch.setattr(zm, "_KEY_BITS", 8)
    elif request.param == "hash-collisions":
        monkeypatch.setattr(zm, "_TABLE_BITS", 3)
    return request.param


def test_edge_cases_match_pycocoevalcap(val_captions, code_path):
    ids = random.Random(1).sample(sorted(val_captions), 60)
    gts, res = leave_one_out(val_captions, ids)
    for name, (cand, refs) in EDGE_CASES.items():
        if code_path == "hash-collisions" and name == "unicode":
            continue  # non-ASCII text takes the dict tokenizer anyway
        gts[name], res[name] = refs, [cand]
    assert_same_as_pycocoevalcap(gts, res)


@pytest.mark.parametrize("table_bits", [18, 1])
def test_tokenizer_numbers_words_exactly(monkeypatch, table_bits):
    """Same word, same id; different words (even sharing their first 8 bytes), different ids; with a
    2-slot hash table almost every word loses its slot and is numbered by the fallback."""
    monkeypatch.setattr(zm, "_TABLE_BITS", table_bits)
    sentences = [
        "sandwich sandwiches  sandwiched a",
        "",
        "skateboard skateboarder skateboarding\tskateboard a",
        "abcdefghabcdefgh abcdefghabcdefghi abcdefgh abcdefghabcdefgh",
        "x",
        "abcdefgh " + " ".join("abcdefgh" + c for c in "ijklmnopqrstu"),  # one head, many tails
    ]
    tokens = zm._tokenize(sentences)
    words = [w for s in sentences for w in s.split()]
    assert tokens.lengths.tolist() == [len(s.split()) for s in sentences]
    ids = tokens.ids.tolist()
    assert len({(w, i) for w, i in zip(words, ids)}) == len(set(words)) == len(set(ids))
    assert [tokens.words()[i] for i in ids] == words


def test_ascii_and_unicode_tokenizers_agree(val_captions):
    ids = random.Random(2).sample(sorted(val_captions), 80)
    gts, res = leave_one_out(val_captions, ids)
    _, ascii_scores = CiderD().compute_score(gts, res)
    gts[ids[0]] = gts[ids[0]] + ["naïve"]  # one non-ASCII word sends everything to the dict tokenizer
    _, unicode_scores = CiderD().compute_score(gts, res)
    np.testing.assert_allclose(unicode_scores[1:], ascii_scores[1:], rtol=0, atol=1e-12)
    assert_same_as_pycocoevalcap(gts, res)


def test_per_image_order_follows_gts_keys(val_captions):
    ids = random.Random(3).sample(sorted(val_captions), 60)
    gts, res = leave_one_out(val_captions, ids)
    shuffled = {f"img-{i}": gts[i] for i in reversed(ids)}
    res2 = {f"img-{i}": res[i] for i in ids}  # a different key order on purpose
    _, want = Cider().compute_score(shuffled, res2)
    _, got = CiderD().compute_score(shuffled, res2)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_single_image_warns_and_scores_zero():
    gts, res = {7: ["a dog on the grass", "a brown dog"]}, {7: ["a dog on the grass"]}
    with pytest.warns(SmallCorpusWarning, match="single image always scores 0"):
        mean, per = CiderD().compute_score(gts, res)
    assert mean == 0.0 and Cider().compute_score(gts, res)[0] == 0.0


def test_bad_input_names_the_image():
    with pytest.raises(DataError, match="'b'"):
        CiderD().compute_score({"a": ["x y"], "b": ["x"]}, {"a": ["x"]})
    with pytest.raises(DataError, match="'a'.*exactly one"):
        CiderD().compute_score({"a": ["x y"]}, {"a": ["x", "y"]})
    with pytest.raises(DataError, match="'a'.*non-empty"):
        CiderD().compute_score({"a": []}, {"a": ["x"]})


def test_reference_transcription_is_pycocoevalcap(val_captions):
    """The plain transcription used below for fixed-corpus mode agrees with pycocoevalcap itself."""
    ids = random.Random(4).sample(sorted(val_captions), 150)
    gts, res = leave_one_out(val_captions, ids)
    gts["rep"], res["rep"] = ["a dog a dog", "dog"], ["a dog a dog a dog"]
    np.testing.assert_allclose(reference(gts, res), Cider().compute_score(gts, res)[1], rtol=0, atol=TOL)


def test_fixed_corpus_document_frequencies(val_captions):
    ids = sorted(val_captions)
    rng = random.Random(5)
    train = {i: val_captions[i] for i in rng.sample(ids[:20000], 1500)}
    batch = rng.sample(ids[20000:], 40)
    gts, res = leave_one_out(val_captions, batch)
    res[batch[0]] = ["a zyzzyva xqj riding a horse"]  # words and n-grams the corpus has never seen
    scorer = CiderD.from_corpus(train)
    df = Counter(g for refs in train.values() for g in {g for r in refs for g in _grams(r, 4)})
    want = reference(gts, res, df=df, size=len(train))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallCorpusWarning)  # a fixed table never warns about small batches
        _, got = scorer.compute_score(gts, res)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    assert scorer.document_frequency.size == 1500
    assert abs(scorer.document_frequency.ref_len - math.log(1500)) < 1e-15
    # the same table given as a pycocoevalcap-style mapping
    _, from_mapping = CiderD(df=dict(df), corpus_size=len(train)).compute_score(gts, res)
    np.testing.assert_allclose(from_mapping, want, rtol=0, atol=TOL)


def test_other_n_and_sigma(val_captions):
    ids = random.Random(6).sample(sorted(val_captions), 100)
    gts, res = leave_one_out(val_captions, ids)
    for n, sigma in ((1, 6.0), (2, 3.0), (6, 6.0)):
        np.testing.assert_allclose(
            CiderD(n=n, sigma=sigma).compute_score(gts, res)[1], reference(gts, res, n=n, sigma=sigma), rtol=0, atol=TOL
        )


def test_document_frequency_table_counts_documents_not_captions():
    table = DocumentFrequency.from_refs({1: ["a dog", "a dog a dog"], 2: ["a cat"], 3: ["dog"]}, n=2)
    vocab = table.vocab
    assert table.size == 3
    counts = dict(zip(table.keys[0].tolist(), table.counts[0].tolist()))
    assert counts[vocab["a"]] == 2 and counts[vocab["dog"]] == 2 and counts[vocab["cat"]] == 1
    assert sorted(table.counts[1].tolist()) == [1, 1, 1]  # "a dog", "dog a", "a cat"


def _grams(s, n):
    w = s.split()
    return [tuple(w[i : i + k]) for k in range(1, n + 1) for i in range(len(w) - k + 1)]

