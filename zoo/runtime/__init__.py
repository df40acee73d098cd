"""Where a command runs: CPU threads, DDP ranks and devices.

- ``threads``: the CPU thread count a ``zoo`` command gives torch (``ZOO_NUM_THREADS``, ``OMP_NUM_THREADS``,
  cores per local rank).
- ``distributed``: ranks, barriers, sharding and DDP wrapping under ``torchrun`` (no-ops in one process).
- ``device``: the device a command runs on (``auto`` → CUDA when there is one).

May import: ``zoo.errors``, torch. Training and evaluation both run under ``torchrun``, so this sits below
both.
"""
