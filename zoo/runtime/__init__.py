"""Where a command runs: CPU threads, DDP ranks and devices.

- ``threads``: the CPU thread count a ``zoo`` command gives torch (``ZOO_NUM_THREADS``, ``OMP_NUM_THREADS``,
  cores per local rank), following the CPUs other processes leave free while it trains.
- ``cpus``: the cores a process may really use (affinity, cgroup CPU quota) and how busy others keep them.
- ``distributed``: ranks, barriers, sharding and DDP wrapping under ``torchrun`` (no-ops in one process).
- ``device``: the device a command runs on (``auto`` → CUDA when there is one).

May import: ``zoo.errors``, torch. Training and evaluation both run under ``torchrun``, so this sits below
both.
"""
