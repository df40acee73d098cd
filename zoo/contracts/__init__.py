"""The contracts a plugin implements, and the probe that checks a decoder against its contract.

- ``decoder``: :class:`Decoder` (teacher-forced ``forward``, one-step ``step``, states the searches reorder).
- ``encoder``: :class:`Encoder` (images → :class:`Features`).
- ``tokenizer``: :class:`Tokenizer` and the special token ids every tokenizer shares.
- ``features``: :class:`Features` (a global vector and an optional grid) and batch selection.
- ``probe``: the decoder contract probed where a decoder is built, with messages naming the method.

May import: ``zoo.errors``, torch. Nothing else in the zoo: this is what a plugin author reads first, and
what every layer above builds on.
"""

from zoo.contracts.decoder import Decoder
from zoo.contracts.encoder import Encoder
from zoo.contracts.features import Features, select_batch
from zoo.contracts.tokenizer import Tokenizer

__all__ = ["Decoder", "Encoder", "Features", "Tokenizer", "select_batch"]
