"""The device a command runs on: ``auto`` is this rank's GPU under ``torchrun``, else CUDA when there is
one, else the CPU."""

from __future__ import annotations

import torch

from zoo.runtime import distributed as dist


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if dist.is_distributed():
            return dist.local_device()
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
