"""Faults under real ``torchrun`` (issue 17, item 5): every rank reports what is on disk, not what it did
itself (only rank 0 writes the training state), and a rank whose peer stopped says so in words, not with
a raw gloo ``RuntimeError``. Two CPU processes with gloo, through the real ``torchrun`` launcher."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from .conftest import ROOT

pytestmark = [pytest.mark.xdist_group("train"), pytest.mark.slow]

TORCHRUN = Path(sys.executable).with_name("torchrun")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    if not TORCHRUN.exists():
        pytest.skip(f"needs torch's torchrun launcher beside {sys.executable}")
    cmd = [str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "zoo", *args]
    full_env = {**os.environ, "ZOO_DISABLE_PLUGIN_AUTOLOAD": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                "ZOO_DIST_TIMEOUT_MINUTES": "2", **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600)


def _folder_data(root: Path, n: int, bad: int | None) -> Path:
    """``n`` small PNGs with one caption each (``split: train``); image ``bad`` is not an image at all."""
    root.mkdir()
    words = ["red", "blue", "green", "square", "circle", "small", "large"]
    lines = []
    for i in range(n):
        name = f"img{i:03d}.png"
        if i == bad:
            (root / name).write_bytes(b"this is not a picture")
        else:
            Image.new("RGB", (32, 32), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)).save(root / name)
        lines.append(json.dumps({"file": name, "caption": f"a {words[i % 7]} {words[(i + 3) % 7]}", "split": "train"}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--encoder", "resnet10t", "--decoder", "gru", "--tokenizer", "word", "--freeze",
            "--data", "folder", "--data-root", str(data), "--val-split", "none", "--no-progress",
            "--set", "encoder.img_size=32", "--set", "decoder.hidden_size=16", "--set", "decoder.embed_size=16",
            "--set", "tokenizer.min_count=0", "--set", "train.batch_size=4", "--set", "train.steps=20",
            "--set", "train.checkpoint_every=5", "--out", str(out), *extra]


def test_a_bad_image_on_rank_1_only_every_rank_reports_the_state_on_disk(tmp_path):
    n, batch, fail_at = 40, 4, 8  # rank 1 meets the bad image loading step 8; the state on disk is step 5
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))  # zoo.training.pairs: seed 0, epoch 0
    bad = int(order[(fail_at - 1) * batch + 1])  # rank 1 takes positions 1 and 3 of each global batch
    assert bad not in order[: (fail_at - 1) * batch].tolist()
    data = _folder_data(tmp_path / "data", n, bad)
    out = tmp_path / "run"
    done = _torchrun(_train_args(data, out, "--set", "train.cache_features=false"))
    text = done.stdout + done.stderr
    assert done.returncode != 0
    from zoo.training.state import saved_step

    assert (out / "state.safetensors").exists(), text[-3000:]
    on_disk = saved_step(out / "state.safetensors")
    assert on_disk == 5, text[-3000:]
    lines = [ln for ln in text.splitlines() if "training" in ln and ("stopped" in ln or "failed" in ln)]
    assert lines, text[-3000:]
    assert "step 7 (written now)" not in text and "no trained step is lost" not in text, text[-3000:]
    rank1 = [ln for ln in text.splitlines() if "rank 1" in ln]
    assert any(f"step {on_disk}" in ln and "rank 0" in ln for ln in rank1), text[-3000:]
    assert f"img{bad:03d}.png cannot be decoded" in text  # rank 1 names the image
    assert "RuntimeError" not in text and not re.search(r'File "[^"]*/zoo/', text), text[-4000:]
    rank0 = [ln for ln in text.splitlines() if ln.startswith("zoo: error: rank 0")]
    if rank0:  # rank 0 (unless torchrun stopped it first) says its peer stopped, and what it kept
        assert "another process of this torchrun job stopped" in rank0[0] and f"step {on_disk}" in rank0[0]


def test_a_rank_whose_peer_stops_while_the_cache_is_built_says_so_in_words(tmp_path, small_disk):
    """Rank 0 builds the feature cache on a disk too small for it and stops with that message; rank 1, waiting
    for the cache, says its peer stopped: no raw gloo RuntimeError, no traceback."""
    data = _folder_data(tmp_path / "data", 24, None)
    cache = small_disk(64 * 1024)
    done = _torchrun(_train_args(data, tmp_path / "run"), env={"ZOO_FEATURE_CACHE": str(cache)})
    text = done.stdout + done.stderr
    assert done.returncode != 0
    assert "no room for feature cache entry" in text, text[-3000:]
    # no raw gloo RuntimeError and no traceback through the zoo's code on any rank (torchrun's own summary of
    # the failed children is its business); rank 1, if it gets to speak before torchrun stops it, says why
    assert "RuntimeError" not in text and not re.search(r'File "[^"]*/zoo/', text), text[-4000:]
    for line in text.splitlines():
        if line.startswith("zoo: error: rank 1"):
            assert "another process of this torchrun job stopped" in line and "feature cache" in line, line
    assert list(cache.iterdir()) == [] and not (tmp_path / "run").exists()  # nothing left behind
