"""Several processes with ``torchrun``: thin helpers over ``torch.distributed`` (an existing engine, not
our own). Training wraps the model in DistributedDataParallel; evaluation shards the images, gathers the
captions on every rank and scores once. Without ``torchrun`` every helper is a no-op for one process.

When one process of the job stops (an error of its own, a full disk), the others learn it as a raw gloo or
NCCL ``RuntimeError`` ("Connection closed by peer") at their next collective. The helpers here turn that
into :class:`PeerStopped`, which says which rank this is, what it was doing, and that the other process's
own message says why; :func:`is_peer_failure` tells such an error apart for code that calls torch itself
(DDP's gradient all-reduce inside a training step)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as tdist
from torch.nn.parallel import DistributedDataParallel as DDP

from zoo.errors import ZooError


class PeerStopped(ZooError):
    """Another process of this ``torchrun`` job stopped while this one waited for it at a collective."""


#: what gloo and NCCL say when the process at the other end has gone
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "connection closed", "Broken pipe",
              "NCCL communicator was aborted", "Socket Timeout", "timed out", "[gloo]", "gloo/transport")


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is torch.distributed's way of saying another process of the job is gone (or stopped
    answering): a ``DistError``, or a ``RuntimeError`` from gloo or NCCL about the connection."""
    if isinstance(exc, (tdist.DistError, PeerStopped)):
        return True
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in _PEER_GONE)


def peer_detail(exc: BaseException) -> str:
    """The useful part of a gloo/NCCL message (its first sentence, without the source path)."""
    if isinstance(exc, PeerStopped) and exc.__cause__ is not None:  # already said once: the torch error under it
        exc = exc.__cause__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if text.startswith("[") and "] " in text:  # "[/__w/.../pair.cc:561] Connection closed by peer ..."
        text = text.split("] ", 1)[1]
    return text.split(". ")[0]


def peer_stopped(exc: BaseException, doing: str) -> PeerStopped:
    """The :class:`PeerStopped` to raise for ``exc``, met while ``doing`` (e.g. "waiting for local rank 0
    to build the feature cache")."""
    return PeerStopped(
        f"rank {rank()} of {world_size()}: another process of this torchrun job stopped while this one was "
        f"{doing}; that process's own message (above, or in its log) says why. This process stops too "
        f"(torch.distributed: {peer_detail(exc)})."
    )


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


def barrier(doing: str = "waiting for the other processes") -> None:
    """Wait for every rank; a rank that has gone is a :class:`PeerStopped` saying what this one was ``doing``."""
    if is_distributed():
        try:
            tdist.barrier()
        except RuntimeError as exc:
            if is_peer_failure(exc):
                raise peer_stopped(exc, doing) from exc
            raise


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
    try:
        for buf in model.buffers():
            tdist.broadcast(buf.data, src=src)
    except RuntimeError as exc:
        if is_peer_failure(exc):
            raise peer_stopped(exc, "taking rank 0's model at the end of training") from exc
        raise


def all_gather_object(obj: Any) -> list[Any]:
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    try:
        tdist.all_gather_object(out, obj)
    except RuntimeError as exc:
        if is_peer_failure(exc):
            raise peer_stopped(exc, "gathering every rank's results") from exc
        raise
    return out


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (every rank gets the same answer, so they decide alike)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=local_device() if tdist.get_backend() == "nccl" else "cpu")
    try:
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    except RuntimeError as exc:
        if is_peer_failure(exc):
            raise peer_stopped(exc, "checking the loss with the other ranks") from exc
        raise
    return bool(t.item() > 0)


def shard(indices: list[int]) -> list[int]:
    """This rank's strided share of ``indices``."""
    return indices[rank() :: world_size()]


def cleanup() -> None:
    if is_distributed():
        tdist.destroy_process_group()
