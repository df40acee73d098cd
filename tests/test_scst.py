"""Training objectives as plugins; self-critical training: the reward, the baseline, the gradient, that it
learns what its reward prefers, exact resume, the checkpoint's record of the objective."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import zoo
from zoo.errors import DuplicateNameError, UnknownNameError, ZooError
from zoo.evaluation.cider import CiderD
from zoo.training.objective import ObjectiveBatch, ObjectiveContext, create_objective
from zoo.training.reward import CiderReward, split_rows
from zoo_plugins.objectives.scst import SelfCritical, leave_one_out_mean, self_critical_loss, within_image_std

from .helpers import CAPTIONS, tiny_model, tiny_tokenizer


def _pairs(tok, caps_per_image: list[list[str]]):
    texts = [c for caps in caps_per_image for c in caps]
    images = torch.tensor([i for i, caps in enumerate(caps_per_image) for _ in caps])
    return tok.batch_encode(texts, max_len=16), images


def _sentence(tok, ids) -> str:
    return " ".join(tok.words[int(i)] for i in ids)


# -- the reward ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hashed", [False, True], ids=["binary-search", "hash-index"])
def test_token_id_reward_equals_cider_d_on_the_captions_as_words(hashed, monkeypatch):
    import zoo.evaluation.cider

    if hashed:  # a training corpus' tables are probed through a hash index; a small one too, here
        monkeypatch.setattr(zoo.evaluation.cider, "_HASH_ABOVE", 0)
    rng = np.random.default_rng(0)
    words = "a red blue green circle square star triangle small big on left of the in corner above".split()
    caps = [[" ".join(rng.choice(words, rng.integers(3, 9))) for _ in range(rng.integers(1, 6))] for _ in range(60)]
    tok = zoo.create_tokenizer("word", [c for cs in caps for c in cs], min_count=0)
    tokens, images = _pairs(tok, caps)
    reward = CiderReward.from_pairs(tokens, images, pad_id=tok.pad_id, eos_id=tok.eos_id, vocab_size=tok.vocab_size)
    # candidates of any ids (a model may sample <pad>, <bos>, <unk>), <eos> included where it ended
    R = 150
    cand_img = rng.integers(0, 60, R)
    cand = torch.tensor(rng.integers(0, tok.vocab_size, (R, 12)))
    lengths = torch.tensor(rng.integers(1, 13, R))
    got = reward(*split_rows(cand, lengths), cand_img)
    # the reference: CiderD on strings, document frequencies from the training references with <eos>
    refs = {i: [_sentence(tok, [*tok.encode(c)[:16], tok.eos_id]) for c in cs] for i, cs in enumerate(caps)}
    scorer = CiderD.from_corpus(refs)
    gts = {k: refs[int(cand_img[k])] for k in range(R)}
    res = {k: [_sentence(tok, cand[k, : lengths[k]].tolist())] for k in range(R)}
    _, want = scorer.compute_score(gts, res)
    assert np.abs(got - want).max() < 1e-9
    assert got.std() > 0.05  # not trivially all equal
    # a candidate equal to one of its references scores well above a random one
    own = torch.tensor([[*tok.encode(caps[3][0]), tok.eos_id]])
    assert reward(*split_rows(own, torch.tensor([own.shape[1]])), np.array([3]))[0] > 3 * got.mean()


# -- ruotianluo's self-critical.pytorch pipeline, written out plainly: the reference for reference_convention
def _rt_array_to_str(arr) -> str:
    """rewards.py: ids up to and including the first 0 (its end token) of a zero-padded array."""
    out = []
    for x in arr:
        out.append(str(int(x)))
        if x == 0:
            break
    return " ".join(out)


def _rt_ngrams(sentence: str, n: int = 4) -> dict:
    words = sentence.split()
    counts: dict = {}
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i:i + k])] = counts.get(tuple(words[i:i + k]), 0) + 1
    return counts


def _rt_cider_d(cand: str, refs: list[str], df: dict, ref_len: float, n: int = 4, sigma: float = 6.0) -> float:
    """ciderD_scorer.py: tf-idf vectors, clipped cosine per n, Gaussian length penalty (length counted
    in bigrams, as there), mean over n and references, ×10."""
    def vec(counts):
        v = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            v[k][gram] = float(tf) * (ref_len - np.log(max(1.0, df.get(gram, 0.0))))
            norm[k] += v[k][gram] ** 2
            if k == 1:
                length += tf
        return v, [np.sqrt(x) for x in norm], length

    vh, nh, lh = vec(_rt_ngrams(cand))
    total = np.zeros(n)
    for ref in refs:
        vr, nr, lr = vec(_rt_ngrams(ref))
        val = np.zeros(n)
        for k in range(n):
            for gram in vh[k]:
                val[k] += min(vh[k][gram], vr[k].get(gram, 0.0)) * vr[k].get(gram, 0.0)
            if nh[k] != 0 and nr[k] != 0:
                val[k] /= nh[k] * nr[k]
            val[k] *= np.e ** (-(float(lh - lr) ** 2) / (2 * sigma**2))
        total += val
    return float(np.mean(total) / len(refs) * 10.0)


def _rt_rewards(caption_ids: list[list[list[int]]], samples: list[tuple[int, list[int]]], seq_length: int = 16):
    """The pipeline on id strings (end token 0): prepro_labels.py cuts each caption into a zero-padded
    ``seq_length`` array; prepro_ngrams.py counts document frequencies per image over the uncut captions
    + end token; ref_len = log(images); rewards.py writes labels and samples with array_to_str."""
    df: dict = {}
    for caps in caption_ids:
        grams = set()
        for c in caps:
            grams |= set(_rt_ngrams(" ".join(map(str, [*c, 0]))))
        for g in grams:
            df[g] = df.get(g, 0) + 1
    ref_len = np.log(float(len(caption_ids)))
    labels = []
    for caps in caption_ids:
        rows = np.zeros((len(caps), seq_length), dtype=np.int64)
        for j, c in enumerate(caps):
            rows[j, :min(len(c), seq_length)] = c[:seq_length]
        labels.append([_rt_array_to_str(r) for r in rows])
    out = []
    for image, ids in samples:
        row = np.zeros(seq_length, dtype=np.int64)
        row[:len(ids)] = ids
        out.append(_rt_cider_d(_rt_array_to_str(row), labels[image], df, ref_len))
    return np.array(out)


def test_ruotianluo_convention_equals_that_pipeline_and_differs_from_ours_on_cut_references():
    rng = np.random.default_rng(3)
    words = "a red blue green circle square star triangle small big on left of the in corner above".split()
    # captions of 3..22 words: shorter than, exactly at and beyond the 16-token cut
    caps = [[" ".join(rng.choice(words, rng.integers(3, 23))) for _ in range(rng.integers(2, 6))] for _ in range(40)]
    caps[0][0] = " ".join(rng.choice(words, 16))  # exactly 16: no end token there either
    tok = zoo.create_tokenizer("word", [c for cs in caps for c in cs], min_count=0)

    class Cfg:
        seed = 0
        max_caption_len = 16

    class Train:
        def __iter__(self):
            return iter([type("Item", (), {"captions": cs})() for cs in caps])

    tokens, images = _pairs(tok, caps)

    def rewards(convention: str, cand, lengths, cand_img):
        obj = SelfCritical(reference_convention=convention)
        obj.setup(ObjectiveContext(Train(), tok, tokens, images, Cfg, torch.device("cpu")))
        return obj.rewards(cand, lengths, cand_img)

    # samples: references with words swapped (so they share n-grams), cut at 16 tokens, <eos> where they end
    R = 120
    cand_img = rng.integers(0, 40, R)
    samples, rows = [], torch.full((R, 16), tok.pad_id)
    for k in range(R):
        ids = tok.encode(caps[cand_img[k]][rng.integers(len(caps[cand_img[k]]))])
        ids = [i if rng.random() > 0.3 else int(rng.integers(4, tok.vocab_size)) for i in ids][: int(rng.integers(2, 19))]
        body = ids[:16] if len(ids) >= 16 else [*ids, tok.eos_id]
        rows[k, :len(body)] = torch.tensor(body)
        samples.append((int(cand_img[k]), [0 if i == tok.eos_id else i for i in body]))
    lengths = (rows != tok.pad_id).sum(1)
    assert tok.eos_id != 0 and min(min(tok.encode(c)) for cs in caps for c in cs) > 0  # 0 is free for the end token
    want = _rt_rewards([[tok.encode(c) for c in cs] for cs in caps], samples)
    got = rewards("ruotianluo", rows, lengths, cand_img)
    assert np.abs(got - want).max() < 1e-12
    ours = rewards("zoo", rows, lengths, cand_img)
    assert np.abs(ours - got).max() > 0.01  # the conventions differ where references were cut
    long = np.array([max(len(tok.encode(c)) for c in caps[i]) >= 16 for i in cand_img])
    assert np.abs(ours - got)[long].mean() > np.abs(ours - got)[~long].mean()


def test_nsc_baseline_is_the_leave_one_out_mean():
    r = np.array([1.0, 2.0, 6.0, 0.5, 0.5, 2.0])
    b = leave_one_out_mean(r, 3)
    want = [np.mean(np.delete(r[g * 3:(g + 1) * 3], j)) for g in range(2) for j in range(3)]
    assert np.allclose(b, want, rtol=0, atol=1e-15)
    assert b.mean() == pytest.approx(r.mean(), abs=1e-15)  # why the log shows no NSC baseline
    # the spread logged instead: within each image, not between images
    assert within_image_std(np.array([1.0, 3.0, 11.0, 13.0]), 2) == pytest.approx(1.0)


# -- the gradient -------------------------------------------------------------------------------------------
def _features(batch: int, dim: int, seed: int = 0) -> zoo.Features:
    g = torch.Generator().manual_seed(seed)
    return zoo.Features(torch.randn(batch, 4, dim, generator=g), torch.randn(batch, dim, generator=g))


@pytest.mark.parametrize("decoder", ["gru", "gru-attn"])
def test_one_teacher_forced_pass_gives_the_reinforce_gradient_of_the_sampling_loop(decoder):
    from zoo.generation.sampling import sample

    model = tiny_model(decoder).eval()
    tok = model.tokenizer
    feats = _features(3, model.decoder.feature_dim)
    n = 4
    s = sample(model.decoder, feats, bos_id=tok.bos_id, eos_id=tok.eos_id, n=n, max_len=7,
               generator=torch.Generator().manual_seed(1))
    adv = np.random.default_rng(0).normal(size=s.tokens.shape[0])
    params = [p for p in model.decoder.parameters() if p.requires_grad]
    loss = self_critical_loss(model, model, feats, s.tokens, s.lengths, adv, n, tok.bos_id)
    ours = torch.autograd.grad(loss, params, allow_unused=True)
    # reference: REINFORCE by back-propagating through the sampling loop, one step at a time
    rows = feats.index_select(torch.arange(3).repeat_interleave(n))
    memory = model.decoder.prepare(rows)
    state = model.decoder.init_state(memory)
    prev = torch.full((s.tokens.shape[0],), tok.bos_id)
    total = torch.zeros(())
    for t in range(s.tokens.shape[1]):
        logits, state = model.decoder.step(prev, state, memory)
        logp = torch.log_softmax(logits, -1).gather(1, s.tokens[:, t:t + 1]).squeeze(1)
        alive = (t < s.lengths).float()
        total = total - (torch.tensor(adv, dtype=torch.float32) * logp * alive).sum()
        prev = s.tokens[:, t]
    total = total / s.lengths.sum()
    want = torch.autograd.grad(total, params, allow_unused=True)
    assert abs(float(loss.detach()) - float(total.detach())) < 1e-5
    for a, b in zip(ours, want):
        if b is None:
            assert a is None or not a.any()
            continue
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def _scst_context(model, caps_per_image, seed=0):
    class Cfg:
        label_smoothing = 0.0

    Cfg.seed = seed
    tokens, images = _pairs(model.tokenizer, caps_per_image)
    return ObjectiveContext(None, model.tokenizer, tokens, images, Cfg, torch.device("cpu"))


def test_a_reward_that_prefers_a_token_makes_it_more_probable():
    model = tiny_model("gru", dropout=0.0)
    tok = model.tokenizer
    target = tok.encode("star")[0]
    obj = SelfCritical(sample_n=6, max_len=6)
    obj.setup(_scst_context(model, [[c] for c in CAPTIONS]))
    obj.rewards = lambda tokens, lengths, images: np.array(  # the share of a sample's tokens that are "star"
        [float((tokens[i, : lengths[i]] == target).float().mean()) for i in range(len(lengths))])
    feats = _features(5, model.decoder.feature_dim, seed=2)

    def p_target() -> float:
        with torch.no_grad():
            model.eval()
            logits = model(feats, torch.full((5, 1), tok.bos_id))
            return float(torch.softmax(logits[:, 0], -1)[:, target].mean())

    before = p_target()
    opt = torch.optim.Adam(model.decoder.parameters(), lr=0.02)
    logs = []
    for step in range(15):
        model.train()
        out = obj.step(model, model, ObjectiveBatch(feats, torch.zeros(5, 2, dtype=torch.long), torch.arange(5), step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        logs.append(out.logs)
    assert p_target() > 3 * before
    assert logs[-1]["reward"] > logs[0]["reward"]
    # NSC: no baseline in the log (it averages to the mean reward); the spread of an image's samples instead
    assert set(logs[0]) == {"reward", "reward_std", "sample_len"}
    assert logs[0]["reward_std"] > 0


def test_greedy_baseline_is_the_reward_of_the_greedy_caption():
    model = tiny_model("gru", dropout=0.0)
    obj = SelfCritical(sample_n=3, max_len=6, baseline="greedy")
    obj.setup(_scst_context(model, [[c] for c in CAPTIONS]))
    seen = []
    real = obj.rewards

    def spy(tokens, lengths, images):
        seen.append((tokens.clone(), lengths.clone()))
        return real(tokens, lengths, images)

    obj.rewards = spy
    feats = _features(5, model.decoder.feature_dim)
    out = obj.step(model, model, ObjectiveBatch(feats, torch.zeros(5, 2, dtype=torch.long), torch.arange(5), 0))
    greedy_tokens, greedy_len = seen[1]
    model.eval()
    want = [model.tokenizer.decode(t[:n].tolist()) for t, n in zip(greedy_tokens, greedy_len)]
    assert want == model.generate(feats, beam_size=1, max_len=6)
    assert out.logs["baseline"] == pytest.approx(float(real(greedy_tokens, greedy_len, np.arange(5)).mean()))
    assert set(out.logs) == {"reward", "reward_std", "baseline", "sample_len"}


# -- the registry and the settings ---------------------------------------------------------------------------
def test_objectives_are_registered_plugins_with_signatures():
    assert {"xe", "scst"} <= set(zoo.list_names("objectives"))
    entry = zoo.get_registry().get("objective", "scst")
    assert entry.plugin == "scst-objective" and entry.module == "zoo_plugins.objectives.scst"
    with pytest.raises(UnknownNameError, match="Did you mean: scst"):
        create_objective("scts")
    assert create_objective("xe").signature() == "xe"
    assert create_objective("xe", {"label_smoothing": 0.1}).signature() == "xe(label_smoothing=0.1)"
    assert create_objective("scst").signature() == "scst(cider-d, baseline=mean, n=5, df=train, eos=yes)"
    assert (create_objective("scst", {"baseline": "greedy", "bleu4_weight": 0.5, "sample_n": 8}).signature()
            == "scst(cider-d+0.5*bleu-4, baseline=greedy, n=8, df=train, eos=yes)")
    assert (create_objective("scst", {"reference_convention": "ruotianluo"}).signature()
            == "scst(cider-d, baseline=mean, n=5, df=train, eos=yes, refs=ruotianluo)")
    with pytest.raises(ZooError, match=r"objective\.reference_convention must be one of zoo, ruotianluo"):
        create_objective("scst", {"reference_convention": "karpathy"})
    with pytest.raises(ZooError, match=r"objective\.sampel_n.*sample_n"):
        create_objective("scst", {"sampel_n": 3})
    with pytest.raises(ZooError, match=r"objective\.baseline must be one of mean, greedy"):
        create_objective("scst", {"baseline": "max"})
    with pytest.raises(ZooError, match=r"objective\.sample_n=1.*baseline=greedy"):
        create_objective("scst", {"sample_n": 1})


def test_an_objective_registered_twice_names_both_plugins(fresh_registry, tmp_path, monkeypatch):
    (tmp_path / "my_objectives.py").write_text(textwrap.dedent('''
        import zoo
        from zoo.training.objective import Objective

        class Another(Objective):
            """Another SCST."""

        @zoo.hookimpl
        def zoo_register(registry):
            registry.add_objective("scst", Another)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DuplicateNameError) as exc:
        zoo.load_plugin("my_objectives")
    assert "scst-objective" in str(exc.value) and "my_objectives" in str(exc.value)


def test_objective_settings_are_checked_before_training(tmp_path, capsys):
    from zoo.cli import main

    base = ["train", "--encoder", "resnet10t", "--decoder", "gru", "--tokenizer", "word", "--set", "train.steps=1",
            "--out", str(tmp_path / "x"), "--no-progress"]
    assert main([*base, "--objective", "sctt"]) == 2
    assert "Did you mean: scst" in capsys.readouterr().err
    assert main([*base, "--objective", "scst", "--set", "objective.basline=greedy"]) == 2
    err = capsys.readouterr().err
    assert "objective.basline" in err and "baseline" in err
    assert main([*base, "--set", "train.scst_after=5"]) == 2
    assert "train.objective=scst" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# -- in a run -----------------------------------------------------------------------------------------------
def _spec(**train):
    from zoo.training.runs import RunSpec

    return RunSpec(
        encoder="resnet10t", decoder="gru-stacked", tokenizer="word", data="shapes",
        encoder_kwargs={"img_size": 32, "freeze": True}, decoder_kwargs={"embed_size": 32, "hidden_size": 48},
        tokenizer_kwargs={"min_count": 0}, data_options={"num_train": 120, "num_val": 10, "num_test": 10},
        val_split=None,
        train={"steps": 9, "batch_size": 16, "lr": 1e-3, "warmup_steps": 0, "checkpoint_every": 3,
               "log_every": 1, "progress": False, "objective": "scst", "scst_after": 3, **train},
        objective_options={"sample_n": 3, "max_len": 8},
    )


@pytest.mark.xdist_group("train")
def test_exact_resume_in_the_middle_of_scst(tmp_path, monkeypatch):
    from zoo.training.runs import execute

    monkeypatch.setenv("ZOO_FEATURE_CACHE", str(tmp_path / "features"))
    spec = _spec()
    spec.decoder_kwargs["dropout"] = 0.3  # unused by SCST's eval-mode passes, used by the xe steps
    execute(spec, tmp_path / "straight", progress=False)
    execute(spec, tmp_path / "killed", progress=False, stop_after=7)  # last state at step 6, in SCST
    execute(spec, tmp_path / "killed", resume=True, progress=False)
    a = load_file(str(tmp_path / "straight" / "last.safetensors"))
    b = load_file(str(tmp_path / "killed" / "last.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = [json.loads(x) for x in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 10))
    assert all("reward" in e for e in log if e["step"] > 3) and not any("reward" in e for e in log if e["step"] <= 3)
    straight = [json.loads(x) for x in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert [e.get("reward") for e in straight] == [e.get("reward") for e in log]
    extra = zoo.models.checkpoint.read_extra(tmp_path / "killed" / "last.safetensors")
    assert extra["objective"]["signature"] == "scst(cider-d, baseline=mean, n=3, df=train, eos=yes, max_len=8)"


@pytest.mark.xdist_group("train")
def test_init_starts_a_new_run_from_a_checkpoint_and_records_it(tmp_path, monkeypatch, capsys):
    from zoo.models.checkpoint import read_extra
    from zoo.files import sha256_file
    from zoo.cli import main
    from zoo.training.runs import RunSpec, execute

    monkeypatch.setenv("ZOO_FEATURE_CACHE", str(tmp_path / "features"))
    xe = _spec(steps=2, objective="xe", scst_after=None)
    xe.objective_options = {}
    execute(xe, tmp_path / "xe", progress=False)
    assert read_extra(tmp_path / "xe" / "best.safetensors")["objective"]["signature"] == "xe"
    rc = main(["train", "--init", str(tmp_path / "xe" / "best.safetensors"), "--objective", "scst",
               "--set", "train.steps=2", "--set", "train.lr=1e-9", "--set", "objective.sample_n=2", "--out", str(tmp_path / "scst"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    spec = RunSpec.from_file(tmp_path / "scst" / "run.json")
    ckpt = (tmp_path / "xe" / "best.safetensors").resolve()
    assert spec.init == {"path": str(ckpt), "sha256": sha256_file(ckpt)}
    assert spec.decoder == "gru-stacked" and spec.train["objective"] == "scst"
    assert read_extra(tmp_path / "scst" / "last.safetensors")["objective"]["name"] == "scst"
    # it started from the checkpoint's weights (a learning rate this small leaves them where they were)
    start, end = load_file(str(ckpt)), load_file(str(tmp_path / "scst" / "last.safetensors"))
    assert start.keys() == end.keys()
    assert max(float((start[k].float() - end[k].float()).abs().max()) for k in start) < 1e-5


# -- zoo compare --objective --------------------------------------------------------------------------------
def test_compare_plans_an_scst_run_after_each_xe_run_it_starts_from():
    from zoo.results.compare import CompareConfig, plan

    cfg = CompareConfig(encoders=["resnet10t"], decoders=["gru", "lstm"], tokenizers=["word"], train={"steps": 10},
                        objectives=["xe", "scst"], objective_overrides=["train.lr=5e-5", "objective.sample_n=3"])
    runs = plan(cfg)
    assert [n for n, _ in runs] == ["resnet10t-gru-word-seed0", "resnet10t-gru-word-seed0-scst",
                                    "resnet10t-lstm-word-seed0", "resnet10t-lstm-word-seed0-scst"]
    xe, scst = runs[0][1], runs[1][1]
    assert xe.init is None and "objective" not in xe.train and xe.objective_options == {}
    assert scst.init == {"run": "resnet10t-gru-word-seed0"}
    assert scst.train["objective"] == "scst" and float(scst.train["lr"]) == 5e-5 and scst.objective_options == {"sample_n": 3}


@pytest.mark.parametrize("objectives, message", [("xe,sctt", r"unknown objective 'sctt'.*Did you mean: scst"),
                                                 ("scst", r"list xe too"), ("xe,xe", r"xe more than once")])
def test_bad_compare_objectives_fail_before_any_training(tmp_path, capsys, objectives, message):
    import re

    from zoo.cli import main

    out = tmp_path / "cmp"
    rc = main(["compare", "--encoder", "resnet10t", "--decoder", "gru", "--steps", "2", "--objective", objectives,
               "--metrics", "cider-d", "--out", str(out), "--db", str(tmp_path / "r.sqlite"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and re.search(message, err), err
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.xdist_group("train")
def test_compare_trains_scst_from_the_xe_runs_best_checkpoint(tmp_path, monkeypatch):
    from zoo.models.checkpoint import read_extra
    from zoo.files import sha256_file
    from zoo.results.compare import CompareConfig, compare
    from zoo.results.database import ResultsDB
    from zoo.training.runs import RunSpec

    monkeypatch.setenv("ZOO_FEATURE_CACHE", str(tmp_path / "features"))
    cfg = CompareConfig(
        encoders=["resnet10t"], decoders=["gru"], tokenizers=["word"], data="shapes",
        data_options={"num_train": 100, "num_val": 10, "num_test": 20}, train={"steps": 3}, metrics=("cider-d",),
        beam_size=1, objectives=["xe", "scst"], objective_overrides=["train.steps=2", "objective.sample_n=2"],
        overrides=["encoder.img_size=32", "encoder.freeze=true", "decoder.hidden_size=16", "decoder.embed_size=8",
                   "tokenizer.min_count=0", "train.batch_size=16", "train.progress=false", "train.eval_every=1000"],
    )
    rows = compare(cfg, tmp_path / "cmp", db_path=tmp_path / "r.sqlite", progress=False, say=lambda _: None)
    assert [r["objective"] for r in rows] == ["xe", "scst(cider-d, baseline=mean, n=2, df=train, eos=yes)"]
    xe_best = (tmp_path / "cmp" / "resnet10t-gru-word-seed0" / "best.safetensors").resolve()
    init = RunSpec.from_file(tmp_path / "cmp" / "resnet10t-gru-word-seed0-scst" / "run.json").init
    assert init["path"] == str(xe_best) and init["sha256"] == sha256_file(xe_best)
    assert read_extra(tmp_path / "cmp" / "resnet10t-gru-word-seed0-scst" / "best.safetensors")["objective"]["name"] == "scst"
    with ResultsDB(tmp_path / "r.sqlite") as db:
        assert len(db.rows(data="shapes")) == 2
    # run again: both finished, nothing redone, the plan with its resolved checkpoint is accepted
    again = compare(cfg, tmp_path / "cmp", db_path=tmp_path / "r.sqlite", progress=False, say=lambda _: None)
    assert [r["record_id"] for r in again] == [r["record_id"] for r in rows]
