"""The contracts a plugin implements, and the probe that checks a decoder against its contract.

- ``decoder``: :class:`Decoder` (teacher-forced ``forward``, one-step ``step``, states the searches reorder).
- ``encoder``: :class:`Encoder` (images → :class:`Features`).
- ``tokenizer``: :class:`Tokenizer` and the special token ids every tokenizer shares.
- ``features``: :class:`Features` (a global vector and an optional grid) and batch selection.
- ``probe``: the decoder contract probed where a decoder is built, with messages naming the method.
- ``executor``: :class:`Executor` (where a sweep's jobs run), :class:`Task`, :class:`JobState`, and the stop
  request a job's signal handler makes (``request_stop``) that training honours at the next step.

May import: ``zoo.errors``, torch. Nothing else in the zoo: this is what a plugin author reads first, and
what every layer above builds on.
"""

from zoo.contracts.decoder import Decoder
from zoo.contracts.encoder import Encoder
from zoo.contracts.executor import Executor, JobState, StopRequested, Task, request_stop
from zoo.contracts.features import Features, select_batch
from zoo.contracts.tokenizer import Tokenizer

__all__ = ["Decoder", "Encoder", "Executor", "Features", "JobState", "StopRequested", "Task", "Tokenizer",
           "request_stop", "select_batch"]
