"""DDP on CPU (gloo, two processes): identical weights on both ranks; sharded evaluation equals one process."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = [pytest.mark.xdist_group("train"), pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, cache: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "ZOO_FEATURE_CACHE": cache,
                       "ZOO_DISABLE_PLUGIN_AUTOLOAD": "1"})
    torch.set_num_threads(1)
    from safetensors.torch import save_file

    from zoo.runtime import distributed as dist
    from zoo.evaluation.model_eval import evaluate_model
    from zoo.training.runs import execute, load_split

    from tests.test_train import shapes_spec

    dist.init_from_env()
    spec = shapes_spec("gru", steps=12, eval_every=1000)
    spec.val_split = None
    spec.data_options = {"num_train": 200, "num_val": 10, "num_test": 30}
    run = Path(out) / "run"
    result = execute(spec, run, progress=False)
    # every rank saves the weights it ended with
    model_state = {k: v.detach().clone().contiguous() for k, v in result.model.state_dict().items()}
    save_file(model_state, str(Path(out) / f"rank{rank}.safetensors"))
    import zoo

    model = zoo.load(run / "last.safetensors")
    ev = evaluate_model(model, load_split(spec, "test"), beam_size=2, metrics=("cider-d",), progress=False)
    # a fine-tuned encoder whose conv_head the features never reach: DDP must not wait for its gradients
    ft = shapes_spec("gru", steps=2, eval_every=1000)
    ft.encoder, ft.encoder_kwargs, ft.val_split = "mobilenetv3_small_050", {"img_size": 32}, None
    ft.data_options = {"num_train": 64, "num_val": 10, "num_test": 10, "image_size": 32}
    execute(ft, Path(out) / "fine-tuned", progress=False)
    if rank == 0:
        (Path(out) / "sharded.json").write_text(json.dumps({"captions": {str(k): v for k, v in ev.captions.items()},
                                                            "cider": ev.metrics["CIDEr-D"]}))
    dist.cleanup()


def test_ddp_ranks_agree_and_sharded_eval_equals_single(tmp_path):
    from safetensors.torch import load_file

    import zoo
    from zoo.evaluation.model_eval import evaluate_model
    from zoo.training.runs import load_split

    from .test_train import shapes_spec

    port = _free_port()
    mp.start_processes(_worker, args=(2, port, str(tmp_path), str(tmp_path / "cache")), nprocs=2, join=True,
                       start_method="spawn")
    a = load_file(str(tmp_path / "rank0.safetensors"))
    b = load_file(str(tmp_path / "rank1.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "fine-tuned" / "last.safetensors").exists()
    sharded = json.loads((tmp_path / "sharded.json").read_text())
    spec = shapes_spec("gru")
    spec.data_options = {"num_train": 200, "num_val": 10, "num_test": 30}
    model = zoo.load(tmp_path / "run" / "last.safetensors")
    single = evaluate_model(model, load_split(spec, "test"), beam_size=2, metrics=("cider-d",), progress=False)
    assert {str(k): v for k, v in single.captions.items()} == sharded["captions"]
    assert single.metrics["CIDEr-D"] == pytest.approx(sharded["cider"], abs=1e-12)
