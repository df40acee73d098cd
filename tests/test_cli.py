"""The `zoo` command line: list, info, and errors without tracebacks."""

from __future__ import annotations

import contextlib
import json
import warnings

import pytest

from zoo.cli import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_list_kinds(capsys):
    rc, out, _ = run(capsys, "list", "decoders")
    assert rc == 0 and out.split() == ["gru", "gru-attn", "gru-stacked", "lstm"]
    rc, out, _ = run(capsys, "list", "encoders", "convnext*")
    names = out.split()
    assert rc == 0 and "convnext_tiny" in names and all(n.startswith("convnext") for n in names)
    assert run(capsys, "list", "tokenizers")[1].split() == ["sentencepiece", "word"]
    assert set(run(capsys, "list", "datasets")[1].split()) == {"coco", "coco-karpathy", "folder", "shapes"}
    assert {"bleu", "meteor", "rouge-l", "cider-d", "cider-d-fast", "spice"} <= set(run(capsys, "list", "metrics")[1].split())
    assert "gru-resnet50-coco" in run(capsys, "list", "models")[1].split()
    weights = run(capsys, "list", "weights")[1]
    assert "efficientnet-lite-weights" in weights and "timm-hub-weights" in weights
    # the offline source is asked before the hub
    assert weights.index("efficientnet-lite-weights") < weights.index("timm-hub-weights")


def test_info_shows_origin_and_options(capsys):
    rc, out, _ = run(capsys, "info", "gru-attn")
    assert rc == 0
    assert "plugin: gru-attn" in out and "module: zoo_plugins.decoders.gru_attn" in out
    assert "attention_size = 512" in out and "hidden_size = 512" in out
    rc, out, _ = run(capsys, "info", "gru-attn", "--json")
    data = json.loads(out)
    assert data["kind"] == "decoder" and data["options"]["gate"] is True
    rc, out, _ = run(capsys, "info", "resnet10t")
    assert rc == 0 and "family: timm" in out
    rc, out, _ = run(capsys, "info", "gru-resnet50-coco")
    assert rc == 0 and "decoder: gru" in out


def test_unknown_names_are_errors_not_tracebacks(capsys):
    rc, _, err = run(capsys, "info", "gru-atn")
    assert rc == 2 and "gru-attn" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["list", "decoderz"])  # argparse names the valid kinds
    assert "decoders" in capsys.readouterr().err


def test_plugin_flag_with_a_file(capsys, tmp_path, fresh_registry):
    f = tmp_path / "extra_decoder.py"
    f.write_text(
        "import zoo\n"
        "from zoo_plugins.decoders.gru import GRUDecoder\n"
        "@zoo.hookimpl\n"
        "def zoo_register(registry):\n"
        "    registry.add_decoder('my-gru', GRUDecoder)\n"
    )
    rc, out, _ = run(capsys, "--plugin", str(f), "list", "decoders", "my-*")
    assert rc == 0 and out.split() == ["my-gru"]


# -- zoo eval / zoo caption: bad requests fail before decoding, files survive a scoring failure -------------
SHAPES = ["--data", "shapes", "--split", "test", "--set", "data.num_train=4", "--set", "data.num_val=2",
          "--set", "data.num_test=6", "--set", "data.image_size=32", "--no-record", "--no-progress"]


@pytest.fixture
def tiny_checkpoint(tmp_path):
    import zoo
    from tests.helpers import tiny_model

    return zoo.save(tiny_model(), tmp_path / "ckpt" / "tiny.safetensors")


@pytest.fixture
def no_decoding(monkeypatch):
    """Decoding fails the test: these requests must be refused before any image is decoded."""
    import zoo.evaluation.model_eval

    def decode(*a, **k):
        raise AssertionError("decoded before checking the request")

    monkeypatch.setattr(zoo.evaluation.model_eval, "generate_for_items", decode)


def _eval_files(tmp_path):
    return sorted(p.name for p in (tmp_path / "out").glob("*.json")) if (tmp_path / "out").exists() else []


def test_eval_unknown_metric_fails_before_decoding(capsys, tmp_path, tiny_checkpoint, no_decoding):
    rc, _, err = run(capsys, "eval", str(tiny_checkpoint), *SHAPES, "--out", str(tmp_path / "out"), "--metrics", "bleu,cidr-d")
    assert rc == 2 and "cidr-d" in err and "cider-d" in err and "Traceback" not in err


def test_eval_without_java_fails_before_decoding(capsys, tmp_path, tiny_checkpoint, no_decoding, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    rc, _, err = run(capsys, "eval", str(tiny_checkpoint), *SHAPES, "--out", str(tmp_path / "out"), "--metrics", "cider-d")
    assert rc == 2 and "Java was not found" in err and "openjdk" in err
    # a sentence saying what cannot run and what to do, with a way out that `zoo eval` itself offers
    assert "so none of CIDEr-D can be computed here" in err and "Java 17" in err
    assert "`--no-ptb` (on `zoo eval` and `zoo score`" in err and "NOT the official protocol" in err
    rc, _, err = run(capsys, "eval", str(tiny_checkpoint), *SHAPES, "--out", str(tmp_path / "out"))
    assert rc == 2 and "none of BLEU-1, BLEU-2, BLEU-3, BLEU-4, METEOR, ROUGE-L, CIDEr-D, SPICE can be computed" in err
    assert "and METEOR and SPICE are Java programs too." in err


def test_eval_with_no_metric_available_fails_before_decoding(capsys, tmp_path, tiny_checkpoint, no_decoding, monkeypatch):
    """`--metrics spice` offline: SPICE cannot run (its CoreNLP jars are absent), so nothing could be scored."""
    from zoo_plugins.metrics import coco_metrics

    missing = {k: tmp_path / "absent" / f"{k}.jar" for k in ("spice jar", "CoreNLP jar", "CoreNLP models jar")}
    monkeypatch.setattr(coco_metrics, "spice_files", lambda: missing)
    rc, _, err = run(capsys, "eval", str(tiny_checkpoint), *SHAPES, "--out", str(tmp_path / "out"), "--metrics", "spice")
    assert rc == 2 and "SPICE" in err and "Traceback" not in err
    assert _eval_files(tmp_path) == []


@pytest.mark.parametrize("flag, value, option", [("--beam", "0", "--beam"), ("--max-len", "-1", "--max-len")])
def test_bad_decoding_options_are_errors_not_tracebacks(capsys, tmp_path, tiny_checkpoint, no_decoding, flag, value, option):
    rc, _, err = run(capsys, "eval", str(tiny_checkpoint), *SHAPES, "--out", str(tmp_path / "out"), flag, value)
    assert rc == 2 and option in err and "≥ 1" in err and "Traceback" not in err
    import PIL.Image

    img = tmp_path / "img.png"
    PIL.Image.new("RGB", (32, 32), (200, 30, 30)).save(img)
    rc, _, err = run(capsys, "caption", str(tiny_checkpoint), str(img), flag, value)
    assert rc == 2 and option in err and "≥ 1" in err


@contextlib.contextmanager
def said_once_as_a_note():
    """The CLI prints the small-corpus caveat as a note under the scores, not also as a Python warning."""
    from zoo.evaluation.cider import SmallCorpusWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert not [w for w in caught if issubclass(w.category, SmallCorpusWarning)]


def _needs_java():
    import shutil

    if shutil.which("java") is None:
        pytest.skip("needs Java for the PTB tokenizer")


@pytest.mark.java
def test_scoring_failure_leaves_files_zoo_score_can_use(capsys, tmp_path, tiny_checkpoint, monkeypatch):
    _needs_java()
    import zoo.evaluation.coco
    from zoo.errors import MetricError

    def crash(captions):
        raise MetricError("the PTB tokenizer could not run (simulated crash)")

    monkeypatch.setattr(zoo.evaluation.coco, "ptb_tokenize", crash)
    with said_once_as_a_note():  # 6 images: the small-corpus caveat
        rc, _, err = run(capsys, "eval", str(tiny_checkpoint), *SHAPES, "--out", str(tmp_path / "out"), "--metrics", "cider-d")
    assert rc == 2 and "simulated crash" in err and "zoo score" in err
    assert _eval_files(tmp_path) == ["references_shapes_test_beam3.json", "results_shapes_test_beam3.json"]
    out = tmp_path / "out"
    assert len(json.loads((out / "results_shapes_test_beam3.json").read_text())) == 6
    monkeypatch.undo()
    with said_once_as_a_note():
        rc, stdout, err = run(capsys, "score", str(out / "references_shapes_test_beam3.json"),
                              str(out / "results_shapes_test_beam3.json"), "--metrics", "cider-d", "--no-ptb")
    assert rc == 0 and "6 images" in stdout, err
    assert stdout.count("document frequencies") == 1 and "note: only 6 images scored" in stdout


@pytest.mark.java
def test_eval_files_are_named_by_every_setting_and_say_the_scale(capsys, tmp_path, tiny_checkpoint):
    _needs_java()
    from zoo.evaluation.coco import SCALE_NOTE

    common = ["eval", str(tiny_checkpoint), *SHAPES, "--out", str(tmp_path / "out"), "--metrics", "bleu,cider-d"]
    with said_once_as_a_note():
        rc, whole, _ = run(capsys, *common)
        assert rc == 0
        rc, first4, _ = run(capsys, *common, "--max-len", "8", "--length-penalty", "0.5", "--max-images", "4")
        assert rc == 0
    # the 6 test images are the whole split: no advice to "report the full split"; 4 of them are a subset
    assert whole.count("note: only 6 images scored") == 1 and "this is the whole set" in whole
    assert "report scores on all of them" not in whole
    assert first4.count("note: only 4 images scored") == 1 and "4 of the split's 6 images" in first4
    files = _eval_files(tmp_path)
    assert "metrics_shapes_test_beam3.json" in files  # the default case keeps the plain name
    assert "metrics_shapes_test_beam3_len8_lp0.5_first4.json" in files and len(files) == 6
    default = json.loads((tmp_path / "out" / "metrics_shapes_test_beam3.json").read_text())
    other = json.loads((tmp_path / "out" / "metrics_shapes_test_beam3_len8_lp0.5_first4.json").read_text())
    assert default["num_images"] == 6 and other["num_images"] == 4
    assert other["decoding"] == {"beam_size": 3, "max_len": 8, "length_penalty": 0.5}
    assert default["scale"] == SCALE_NOTE and "CIDEr-D 0-10" in default["scale"]


# -- counts are checked by argparse, naming the flag ------------------------------------------------------
@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--workers", "-1"), ("--max-images", "0"),
                                         ("--batch-size", "two")])
def test_eval_counts_out_of_range_fail_at_once_naming_the_flag(capsys, tmp_path, tiny_checkpoint, no_decoding, flag, value):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", str(tiny_checkpoint), *SHAPES, "--out", str(tmp_path / "out"), flag, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}" in err and "integer ≥" in err and "Traceback" not in err
    assert _eval_files(tmp_path) == []


def test_evaluate_model_refuses_bad_counts_before_decoding(no_decoding):
    from tests.helpers import tiny_model
    from zoo.data.datasets import load_dataset
    from zoo.errors import ZooError
    from zoo.evaluation.model_eval import evaluate_model

    data = load_dataset("shapes", split="test", num_train=2, num_val=2, num_test=2, image_size=32)
    for bad, name in (({"batch_size": 0}, "batch_size"), ({"num_workers": -1}, "num_workers"), ({"max_images": 0}, "max_images")):
        with pytest.raises(ZooError, match=name):
            evaluate_model(tiny_model(), data, metrics=("cider-d",), progress=False, **bad)


# -- zoo caption: its own messages -------------------------------------------------------------------------
def test_caption_missing_or_bad_image_names_the_file_without_other_commands_flags(capsys, tmp_path, tiny_checkpoint):
    missing = tmp_path / "nope.jpg"
    rc, _, err = run(capsys, "caption", str(tiny_checkpoint), str(missing))
    assert rc == 2 and str(missing) in err and "does not exist" in err
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not an image")
    rc, _, err2 = run(capsys, "caption", str(tiny_checkpoint), str(not_image))
    assert rc == 2 and str(not_image) in err2 and "not an image" in err2
    for e in (err, err2):
        assert "--data-root" not in e and "--skip-bad-images" not in e and "captions file" not in e


def test_caption_or_eval_of_a_training_state_points_to_the_checkpoints(capsys, tmp_path):
    import torch

    import zoo
    from tests.helpers import tiny_model
    from zoo.training.state import save_state

    model = tiny_model()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    zoo.save(model, run_dir / "best.safetensors")
    zoo.save(model, run_dir / "last.safetensors")
    opt = torch.optim.Adam(model.parameters())
    save_state(run_dir / "state.safetensors", model, opt, {"step": 3})
    import PIL.Image

    img = tmp_path / "img.png"
    PIL.Image.new("RGB", (32, 32), (200, 30, 30)).save(img)
    for command in (["caption", str(run_dir / "state.safetensors"), str(img)],
                    ["eval", str(run_dir / "state.safetensors"), *SHAPES]):
        rc, _, err = run(capsys, *command)
        assert rc == 2 and "training state" in err and "Traceback" not in err
        assert str(run_dir / "best.safetensors") in err and str(run_dir / "last.safetensors") in err
        assert "pretrained=PATH" not in err


# -- without Java ----------------------------------------------------------------------------------------
def test_eval_no_ptb_scores_without_java_and_is_not_recorded(capsys, tmp_path, tiny_checkpoint, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    db = tmp_path / "r.sqlite"
    args = [a for a in SHAPES if a != "--no-record"]
    rc, out, err = run(capsys, "eval", str(tiny_checkpoint), *args, "--out", str(tmp_path / "out"), "--no-ptb",
                       "--db", str(db), "--metrics", "bleu,meteor,cider-d")
    assert rc == 0, err
    assert "NOT PTB-tokenized (not the official protocol)" in out and "CIDEr-D" in out
    assert "METEOR" in out and "Java" in out  # listed as not computed, with the reason
    assert "not recorded" in out and not db.exists()
    metrics = json.loads((tmp_path / "out" / "metrics_shapes_test_beam3_noptb.json").read_text())
    assert metrics["ptb_tokenized"] is False and "CIDEr-D" in metrics["metrics"]


# -- zoo score reads gzip --------------------------------------------------------------------------------
def test_score_reads_gzipped_ground_truth_and_results(capsys, tmp_path):
    import gzip

    gt = {"images": [{"id": i} for i in range(3)],
          "annotations": [{"image_id": i, "id": i, "caption": c} for i, c in enumerate(["a dog", "a cat", "two birds"])]}
    res = [{"image_id": i, "caption": c} for i, c in enumerate(["a dog", "a black cat", "birds"])]
    gt_path, res_path = tmp_path / "gt.json.gz", tmp_path / "res.json"  # the results: gzip under a plain name
    gt_path.write_bytes(gzip.compress(json.dumps(gt).encode()))
    res_path.write_bytes(gzip.compress(json.dumps(res).encode()))
    with said_once_as_a_note():
        rc, out, err = run(capsys, "score", str(gt_path), str(res_path), "--no-ptb", "--metrics", "bleu,cider-d")
    assert rc == 0, err
    assert "3 images" in out and "BLEU-1" in out and out.count("document frequencies") == 1


# -- zoo info / zoo list with a --plugin file --------------------------------------------------------------
README_PLUGIN = '''
import torch, zoo

class MeanDecoder(zoo.Decoder):
    def __init__(self, vocab_size, feature_dim, hidden_size: int = 256):
        super().__init__(vocab_size, feature_dim)
        self.embed, self.rnn = torch.nn.Embedding(vocab_size, hidden_size), torch.nn.GRUCell(hidden_size, hidden_size)
        self.init, self.out = torch.nn.Linear(feature_dim, hidden_size), torch.nn.Linear(hidden_size, vocab_size)
    def init_state(self, feats): return torch.tanh(self.init(feats.pooled))
    def step(self, prev, h, feats): h = self.rnn(self.embed(prev), h); return self.out(h), h
    def forward(self, feats, tokens): return self.forward_stepwise(feats, tokens)

class DocumentedDecoder(MeanDecoder):
    """Mean decoder, documented."""

@zoo.hookimpl
def zoo_register(registry):
    registry.add_decoder("mean-gru", MeanDecoder)
    registry.add_decoder("doc-gru", DocumentedDecoder)
'''


def test_info_shows_only_the_plugins_own_docstring_and_list_shows_the_plugin(capsys, tmp_path, fresh_registry):
    import zoo.registry.manager

    f = tmp_path / "my_decoder.py"
    f.write_text(README_PLUGIN)
    rc, out, _ = run(capsys, "--plugin", str(f), "info", "mean-gru")
    assert rc == 0 and "doc: (no docstring)" in out and "Base class" not in out
    zoo.registry.manager.reset()  # each command line is a fresh process
    rc, out, _ = run(capsys, "--plugin", str(f), "info", "doc-gru", "--json")
    assert rc == 0 and json.loads(out)["doc"] == "Mean decoder, documented."
    zoo.registry.manager.reset()
    rc, out, _ = run(capsys, "--plugin", str(f), "list", "plugins")
    assert rc == 0 and str(f) in out.split() and "zoo_user_plugin_my_decoder" in out


def test_info_folder_shows_the_captions_file_format(capsys):
    """``zoo info folder`` is where a user looks for the format of ``captions.jsonl``/``captions.csv``."""
    rc, out, _ = run(capsys, "info", "folder")
    assert rc == 0
    usage = out.split("  usage:\n", 1)[1]
    for needed in ('{"file": "cat.jpg", "caption": "a cat"}', "captions.csv", "file`` and ``caption",
                   "hash split", "``split``: ``all``"):
        assert needed in usage, needed
    rc, out, _ = run(capsys, "info", "folder", "--json")
    assert "captions.jsonl" in json.loads(out)["usage"]


USAGE_PLUGIN = '''"""``doc-gru``: how to use it.

Train it with ``zoo train --decoder doc-gru``; it reads only the pooled vector.
"""
import zoo

class DocumentedDecoder(zoo.Decoder):
    """Mean decoder, documented.

    ``hidden_size``: the GRU's width.
    """
    def __init__(self, vocab_size, feature_dim, hidden_size: int = 8):
        super().__init__(vocab_size, feature_dim)

@zoo.hookimpl
def zoo_register(registry):
    registry.add_decoder("doc-gru", DocumentedDecoder)
'''


def test_info_shows_a_plugins_docstrings_as_its_usage(capsys, tmp_path, fresh_registry):
    f = tmp_path / "documented.py"
    f.write_text(USAGE_PLUGIN)
    rc, out, _ = run(capsys, "--plugin", str(f), "info", "doc-gru")
    assert rc == 0
    head, usage = out.split("  usage:\n", 1)
    assert "doc: Mean decoder, documented." in head
    assert "    ``hidden_size``: the GRU's width." in usage  # the rest of the class's docstring
    assert "    Train it with ``zoo train --decoder doc-gru``" in usage  # the module's
    assert usage.index("hidden_size") < usage.index("Train it")


def test_info_suggests_encoder_names_too(capsys):
    rc, _, err = run(capsys, "info", "resnet10")
    assert rc == 2 and "resnet10t" in err and "Traceback" not in err


# -- CPU threads ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env, cores, torch_default, expected", [
    ({}, 8, 8, 8),                                                  # alone: every core torch would use
    ({}, 16, 8, 8),                                                 # not more than torch's own default
    ({"OMP_NUM_THREADS": "3"}, 8, 3, None),                         # the user's choice stands
    ({"LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}, 8, 1, 4),   # torchrun's own default: cores per rank
    ({"LOCAL_WORLD_SIZE": "4"}, 2, 2, 1),                           # never below one
    ({"LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "2"}, 8, 2, None),
    ({"ZOO_NUM_THREADS": "1", "OMP_NUM_THREADS": "4"}, 8, 4, 1),    # the zoo's switch wins
])
def test_thread_count_rules(env, cores, torch_default, expected):
    from zoo.runtime.threads import default_threads

    assert default_threads(env, cores, torch_default) == expected


def test_the_command_sets_torch_threads_and_names_a_bad_setting(monkeypatch, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("ZOO_NUM_THREADS", "1")
        torch.set_num_threads(2)
        assert main(["list", "decoders"]) == 0 and torch.get_num_threads() == 1
        monkeypatch.setenv("ZOO_NUM_THREADS", "many")
        assert main(["list", "decoders"]) == 2
        assert "ZOO_NUM_THREADS must be a whole number" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
