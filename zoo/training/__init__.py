"""Training: a run folder from a spec, resumable bit-exactly.

- ``config``: :class:`TrainConfig`, every training setting checked by name.
- ``schedule``: steps, warm-up and the learning rate at each step.
- ``state``: the training-state file (model, optimiser, RNGs, progress) written and read atomically.
- ``pairs``: the (image, caption) pairs an epoch runs over, their order per (seed, epoch), the images of a batch.
- ``loop``: the loop itself (``train``), in steps a reader can follow.
- ``objective`` and ``reward``: the training-objective contract (``xe``, ``scst``) and SCST's token-id
  CIDEr-D reward.
- ``monitor``: ``log.jsonl``, ``curves.png`` at each validation, TensorBoard when installed.
- ``run_guard``: what a failure inside the loop saves, and the message it raises.
- ``runs``: a run folder from a :class:`RunSpec` (data, model, init, resume, refused runs cleaned up), and the
  training speed a finished run recorded.

May import: ``zoo.evaluation`` (validation, rewards), ``zoo.models``, ``zoo.data``, ``zoo.generation``,
``zoo.views``, ``zoo.runtime``, ``zoo.registry``, ``zoo.contracts``, ``zoo.files``, ``zoo.errors``.
"""
