"""The built-in tokenizers: the Karpathy word vocabulary and sentencepiece BPE/unigram, trained on the real
COCO val2014 captions (loaded once per module)."""

from __future__ import annotations

import functools
import gzip
import json
import pickle
import re
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

import zoo
from zoo.errors import CheckpointError, DataError, ZooError
from zoo.registry.registry import Registry
from zoo.contracts.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID
from zoo_plugins.tokenizers import sentencepiece_tokenizer as sp_module
from zoo_plugins.tokenizers import word as word_module
from zoo_plugins.tokenizers.sentencepiece_tokenizer import SentencePieceTokenizer
from zoo_plugins.tokenizers.word import WordTokenizer, split_words

# one xdist worker for the whole module, so the captions are loaded and the models trained once
pytestmark = pytest.mark.xdist_group("tokenizers")

SP_TRAIN = 30_000  # captions used to train the sentencepiece models here
SP_VOCAB = 2_000


@functools.lru_cache(maxsize=1)
def _load_captions(path: str) -> tuple[str, ...]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return tuple(a["caption"] for a in json.load(f)["annotations"])


@pytest.fixture
def captions(coco_val_captions: Path) -> tuple[str, ...]:
    return _load_captions(str(coco_val_captions))


@functools.lru_cache(maxsize=1)
def _word_full(path: str) -> WordTokenizer:
    return WordTokenizer.train(_load_captions(path))


@pytest.fixture
def word_full(coco_val_captions: Path) -> WordTokenizer:
    """The default word vocabulary of all 202,654 val2014 captions."""
    return _word_full(str(coco_val_captions))


@functools.lru_cache(maxsize=2)
def _sp_trained(path: str, model_type: str) -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(_load_captions(path)[:SP_TRAIN], model_type=model_type, vocab_size=SP_VOCAB)


@pytest.fixture(params=["bpe", "unigram"])
def sp_tok(request, coco_val_captions: Path) -> SentencePieceTokenizer:
    return _sp_trained(str(coco_val_captions), request.param)


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


# -- registration ---------------------------------------------------------------------------------------
def test_plugins_register_their_names():
    reg = Registry()
    word_module.zoo_register(reg)
    sp_module.zoo_register(reg)
    assert reg.get("tokenizer", "word").factory is WordTokenizer
    assert reg.get("tokenizer", "sentencepiece").factory is SentencePieceTokenizer
    assert WordTokenizer.name == "word" and SentencePieceTokenizer.name == "sentencepiece"
    assert reg.get("tokenizer", "word").options()["min_count"] == 5
    assert reg.get("tokenizer", "sentencepiece").options()["model_type"] == "bpe"


# -- word ------------------------------------------------------------------------------------------------
def test_split_words_reproduces_karpathy_tokens(coco_mini: Path):
    data = json.loads((coco_mini / "dataset_coco.json").read_text())
    sentences = [s for im in data["images"] for s in im["sentences"]]
    assert len(sentences) == 1410
    mismatches = [(s["raw"], s["tokens"]) for s in sentences if split_words(s["raw"]) != s["tokens"]]
    assert mismatches == []
    assert split_words("A child's twin-hulled boat, his/her TOY!") == [
        "a", "child's", "twin", "hulled", "boat", "his", "her", "toy"
    ]


def test_word_vocabulary_of_all_val2014_captions(captions, word_full):
    assert len(captions) == 202_654
    # measured: 5,937 (5,933 words + 4 specials); Karpathy train (113k images) gives ≈ 9,500
    assert 5_000 <= word_full.vocab_size <= 8_000
    vocab = word_full.words
    assert vocab[:4] == list(SPECIAL_TOKENS)
    assert vocab[4] == "a"  # the most frequent caption word
    # frequency descending, ties alphabetical; every kept word seen more than 5 times
    counts = Counter(split_words("\n".join(captions)))
    keys = [(-counts[w], w) for w in vocab[4:]]
    assert keys == sorted(keys)
    assert min(counts[w] for w in vocab[4:]) == 6
    assert sum(1 for n in counts.values() if n > 5) == word_full.vocab_size - 4


def test_word_round_trip_of_in_vocabulary_captions(captions, word_full):
    checked = 0
    for cap in captions[:3000]:
        ids = word_full.encode(cap)
        if UNK_ID in ids:
            continue
        assert word_full.decode(ids) == " ".join(split_words(cap))
        checked += 1
    assert checked > 2500


def test_word_rare_words_become_unk(captions, word_full):
    counts = Counter(split_words("\n".join(captions)))
    rare = sorted(w for w, n in counts.items() if n == 5)[0]  # seen exactly 5 times: ≤ 5 → <unk>
    ids = word_full.encode(f"a {rare} on the table")
    assert ids[1] == UNK_ID and UNK_ID not in ids[:1] + ids[2:]
    assert word_full.decode(ids) == "a <unk> on the table"
    assert word_full.encode("qwzxplk") == [UNK_ID]


def test_word_min_count_means_more_than():
    caps = ["dog"] * 6 + ["cat"] * 5 + ["owl"]
    tok = WordTokenizer.train(caps)
    assert tok.words[4:] == ["dog"]
    assert tok.encode("dog cat owl") == [4, UNK_ID, UNK_ID]
    tok0 = WordTokenizer.train(caps, min_count=0)
    assert tok0.words[4:] == ["dog", "cat", "owl"]


def test_word_max_vocab_keeps_most_frequent(captions, word_full):
    tok = WordTokenizer.train(captions[:20_000], max_vocab=100)
    assert tok.vocab_size == 100
    assert set(tok.words[4:]) <= set(word_full.words)
    assert tok.words[4:10] == WordTokenizer.train(captions[:20_000]).words[4:10]
    assert tok.options() == {"min_count": 5, "max_vocab": 100}


def test_word_decode_stops_at_eos_and_skips_pad_bos():
    tok = WordTokenizer.train(["a dog runs"] * 6)
    a, dog, runs = tok.encode("a dog runs")
    assert tok.decode([BOS_ID, a, PAD_ID, dog, EOS_ID, runs]) == "a dog"
    assert tok.decode([EOS_ID, a]) == ""
    with pytest.raises(ZooError, match="outside its vocabulary of 7"):
        tok.decode([a, 99])


def test_word_bytes_round_trip(captions, word_full):
    data = word_full.to_bytes()
    assert data == WordTokenizer.train(captions).to_bytes()  # deterministic
    payload = json.loads(data.decode("utf-8"))
    assert payload["format"] == "zoo-word-tokenizer" and payload["version"] == 1
    again = WordTokenizer.from_bytes(data)
    assert again.words == word_full.words and again.options() == word_full.options()
    for cap in captions[-50:]:
        assert again.encode(cap) == word_full.encode(cap)



# -- word: any script ---------------------------------------------------------------------------------------
_OLD_WORD_RULE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # the rule before combining marks were handled


def test_word_keeps_combining_marks_inside_words():
    """Devanagari vowel signs and viramas are combining marks: they belong to the word."""
    assert split_words("नमस्ते दुनिया!") == ["नमस्ते", "दुनिया"]
    assert split_words("مَرْحَبًا بِكُم") == ["مَرْحَبًا", "بِكُم"]  # Arabic harakat
    assert split_words("\u093e stray") == ["stray"]  # a mark with no letter before it is not a word
    tok = WordTokenizer.train(["नमस्ते दुनिया"] * 3, min_count=0)
    assert tok.words[4:] == ["दुनिया", "नमस्ते"]
    assert UNK_ID not in tok.encode("नमस्ते") and tok.decode(tok.encode("नमस्ते दुनिया")) == "नमस्ते दुनिया"


def test_word_decomposed_and_composed_text_are_the_same_words():
    nfc, nfd = unicodedata.normalize("NFC", "Café NAÏVE"), unicodedata.normalize("NFD", "Café NAÏVE")
    assert nfc != nfd
    assert split_words(nfd) == split_words(nfc) == ["café", "naïve"]
    tok = WordTokenizer.train([nfc, "a dog"], min_count=0)
    assert tok.encode(nfd) == tok.encode(nfc) and UNK_ID not in tok.encode(nfd)
    from_nfd = WordTokenizer.train([nfd, "a dog"], min_count=0)
    assert from_nfd.words == tok.words


def test_word_text_without_combining_marks_splits_as_before(captions):
    """Existing vocabularies keep their words and ids: ASCII and precomposed Latin split exactly as the
    old rule did (the whole of val2014, plus punctuation, underscores and other scripts without marks)."""
    samples = [
        "A child's twin-hulled boat, his/her TOY!", "snake_case it'_s 'quoted' rock'n'roll", "a 12x3.5 m² sign",
        "Crème brûlée at the café, naïve Ærøskøbing; Straße ÉCOLE", "Кошка на крыше; Γάτα, 猫が屋根の上にいる",
        "tabs\tand\nnewlines — dashes… «quotes»", "",
    ]
    for text in samples:
        assert split_words(text) == _OLD_WORD_RULE.findall(text.lower()), text
    joined = "\n".join(captions)
    assert split_words(joined) == _OLD_WORD_RULE.findall(joined.lower())


# -- sentencepiece ----------------------------------------------------------------------------------------
def test_sp_vocab_size_and_special_ids(sp_tok, captions):
    assert sp_tok.vocab_size == SP_VOCAB
    assert [sp_tok._sp.id_to_piece(i) for i in range(4)] == list(SPECIAL_TOKENS)
    assert (sp_tok._sp.pad_id(), sp_tok._sp.bos_id(), sp_tok._sp.eos_id(), sp_tok._sp.unk_id()) == (
        PAD_ID, BOS_ID, EOS_ID, UNK_ID
    )
    ids = [i for cap in captions[:500] for i in sp_tok.encode(cap)]
    assert min(ids) > UNK_ID  # training captions never encode to a special id
    assert max(ids) < SP_VOCAB
    assert sp_tok.options() == {
        "model_type": sp_tok.options()["model_type"],
        "vocab_size": SP_VOCAB,
        "lowercase": True,
        "character_coverage": 1.0,
    }


def test_sp_round_trip_of_held_out_captions(sp_tok, captions):
    seen = set("".join(captions[:SP_TRAIN]).lower())
    held_out = [c for c in captions[SP_TRAIN : SP_TRAIN + 2000] if set(c.lower()) <= seen | {"\n"}]
    assert len(held_out) > 1900
    for cap in held_out:
        ids = sp_tok.encode(cap)
        assert UNK_ID not in ids
        assert sp_tok.decode(ids) == _normalised(cap)


def test_sp_unknown_character_decodes_as_unk(sp_tok):
    ids = sp_tok.encode("a dog with a ☃")
    assert UNK_ID in ids
    assert sp_tok.decode(ids) == "a dog with a <unk>"
    assert sp_tok.decode([BOS_ID, *sp_tok.encode("A DOG"), EOS_ID, *sp_tok.encode("cat")]) == "a dog"


def test_sp_training_is_deterministic(sp_tok, captions):
    again = SentencePieceTokenizer.train(captions[:SP_TRAIN], **sp_tok.options())
    assert again.to_bytes() == sp_tok.to_bytes()


def test_sp_bytes_and_pickle_round_trip(sp_tok, captions):
    data = sp_tok.to_bytes()
    assert data.startswith(b"zoo-sentencepiece\n")
    for again in (SentencePieceTokenizer.from_bytes(data), pickle.loads(pickle.dumps(sp_tok))):
        assert again.options() == sp_tok.options()
        assert again.vocab_size == sp_tok.vocab_size
        for cap in captions[-200:]:
            assert again.encode(cap) == sp_tok.encode(cap)


def test_sp_lowercase_false_keeps_case(captions):
    tok = SentencePieceTokenizer.train(captions[:3000], vocab_size=300, lowercase=False)
    assert tok.options()["lowercase"] is False
    assert tok.decode(tok.encode("A Dog on a Table")) == "A Dog on a Table"


def test_sp_vocab_size_too_large_says_what_fits(captions):
    with pytest.raises(ZooError, match=r"vocab_size=4000 is too large for these 50 captions") as err:
        SentencePieceTokenizer.train(captions[:50], vocab_size=4000)
    fits = int(str(err.value).split("Set vocab_size <= ")[1].split(",")[0])
    assert 50 < fits < 4000
    assert SentencePieceTokenizer.train(captions[:50], vocab_size=fits).vocab_size == fits


@pytest.mark.parametrize(
    "options, message",
    [
        ({"model_type": "wordpiece"}, "model_type must be one of bpe, unigram"),
        ({"vocab_size": 4}, "vocab_size must be an integer > 4"),
        ({"character_coverage": 0}, "character_coverage must be in"),
        ({"vocab": 100}, "unknown option.*vocab.*vocab_size"),
    ],
)
def test_sp_bad_options(options, message):
    with pytest.raises(ZooError, match=message):
        SentencePieceTokenizer.train(["a dog"] * 10, **options)


def test_word_bad_options():
    with pytest.raises(ZooError, match="min_count must be an integer"):
        WordTokenizer.train(["a dog"], min_count=-1)
    with pytest.raises(ZooError, match="max_vocab must be None or an integer > 4"):
        WordTokenizer.train(["a dog"], max_vocab=4)
    with pytest.raises(ZooError, match="unknown option.*min_cnt.*min_count"):
        WordTokenizer.train(["a dog"], min_cnt=1)
    with pytest.raises(DataError, match="no word occurs more than min_count=5 times in the 1 captions"):
        WordTokenizer.train(["a dog"])


# -- both --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [WordTokenizer, SentencePieceTokenizer])
@pytest.mark.parametrize("caps", [[], ["", "   "]])
def test_training_on_no_captions_is_a_clear_error(cls, caps):
    with pytest.raises(DataError, match=f"cannot train the {cls.name} tokenizer on no captions"):
        cls.train(caps)


def test_from_bytes_rejects_garbage_and_the_other_tokenizer():
    word = WordTokenizer.train(["a dog on a mat"], min_count=0)
    sp = SentencePieceTokenizer.train(["a dog on a mat", "a cat"] * 20, vocab_size=20)
    for garbage in (b"", b"\x00\xff garbage", b'{"format": "other"}', sp.to_bytes()):
        with pytest.raises(CheckpointError, match="not a word tokenizer payload"):
            WordTokenizer.from_bytes(garbage)
    for garbage in (b"", b"\x00\xff garbage", word.to_bytes()):
        with pytest.raises(CheckpointError, match="not a sentencepiece tokenizer payload"):
            SentencePieceTokenizer.from_bytes(garbage)
    header, _, _ = sp.to_bytes().partition(b"}\n")
    with pytest.raises(CheckpointError, match="model bytes do not load"):
        SentencePieceTokenizer.from_bytes(header + b"}\n" + b"not a model")
    newer = json.loads(word.to_bytes())
    newer["version"] = 99
    with pytest.raises(CheckpointError, match="version 99"):
        WordTokenizer.from_bytes(json.dumps(newer).encode())
    assert issubclass(CheckpointError, zoo.ZooError) and issubclass(DataError, zoo.ZooError)


@pytest.fixture(params=["word", "sentencepiece"])
def any_tok(request, word_full, coco_val_captions):
    return word_full if request.param == "word" else _sp_trained(str(coco_val_captions), "bpe")


def test_batch_encode_pads_and_cuts_keeping_eos(any_tok):
    long = "a man in a red shirt is riding a brown horse along the beach near the water at sunset"
    short = "a dog"
    n_long, n_short = len(any_tok.encode(long)), len(any_tok.encode(short))
    assert n_long > 16

    full = any_tok.batch_encode([long, short])
    assert full.shape == (2, n_long + 2)
    assert full[0, 0] == BOS_ID and full[0, -1] == EOS_ID
    assert full[1, : n_short + 2].tolist() == [BOS_ID, *any_tok.encode(short), EOS_ID]
    assert (full[1, n_short + 2 :] == PAD_ID).all()
    assert any_tok.decode(full[0].tolist()) == _normalised(long)

    cut = any_tok.batch_encode([long, short], max_len=16)
    assert cut.shape == (2, 18)
    assert cut[0].tolist() == [BOS_ID, *any_tok.encode(long)[:16], EOS_ID]
    assert any_tok.decode(cut[0].tolist()) == any_tok.decode(any_tok.encode(long)[:16])
