"""Several processes with ``torchrun``: thin helpers over ``torch.distributed`` (an existing engine, not
our own). Training wraps the model in DistributedDataParallel; evaluation shards the images, gathers the
captions on every rank and scores once. Without ``torchrun`` every helper is a no-op for one process."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as tdist
from torch.nn.parallel import DistributedDataParallel as DDP


def is_distributed() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def init_from_env() -> bool:
    """Join the process group that ``torchrun`` describes in the environment (WORLD_SIZE > 1)."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # the longest wait at a collective is building the feature cache (other ranks wait at a barrier):
    # on COCO that can take longer than torch's default 10-30 minutes
    minutes = float(os.environ.get("ZOO_DIST_TIMEOUT_MINUTES", "120"))
    tdist.init_process_group(backend=backend, timeout=timedelta(minutes=minutes))
    return True


def rank() -> int:
    return tdist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    """This process's index on its machine (``torchrun`` sets LOCAL_RANK)."""
    return int(os.environ.get("LOCAL_RANK", rank())) if is_distributed() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    if is_distributed():
        tdist.barrier()


def local_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def wrap_ddp(model: torch.nn.Module, device: torch.device, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``find_unused_parameters``: set it when some trainable parameters may get no gradient (a
    fine-tuned timm backbone whose classifier-side layers the features never reach); DDP otherwise
    stops at the second step waiting for their gradients."""
    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def broadcast_buffers(model: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank. DDP broadcasts them at
    the start of each forward, so after the last step each rank holds its own; this makes them agree."""
    if not is_distributed():
        return
    for buf in model.buffers():
        tdist.broadcast(buf.data, src=src)


def all_gather_object(obj: Any) -> list[Any]:
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


def shard(indices: list[int]) -> list[int]:
    """This rank's strided share of ``indices``."""
    return indices[rank() :: world_size()]


def cleanup() -> None:
    if is_distributed():
        tdist.destroy_process_group()
