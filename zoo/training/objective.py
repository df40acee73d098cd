"""The training-objective contract: what ``zoo train`` asks of a loss.

``zoo.training.loop`` is the loop (data order, optimiser, schedule, validation, checkpoints, resume); what a
step *minimises* is an :class:`Objective`, a plugin kind like decoders (``registry.add_objective(name,
cls)``, ``zoo list objectives``, ``zoo info NAME``). The built-ins are ``xe`` (teacher-forced
cross-entropy) and ``scst`` (self-critical sequence training), in ``plugins/objectives/``; a third party
adds a structure loss or another reward the same way, without touching ``zoo/``.

The life of an objective in one run:

1. ``cls(**options)``: the options come from ``--set objective.KEY=VALUE`` (or a recipe's
   ``objective:`` mapping). Unknown keys are refused before this by the registry's option check (as for
   decoders); the constructor checks the *values* and raises :class:`ObjectiveOptionError` naming
   ``objective.KEY``.
2. ``setup(context)`` once, before the first step (and again after a resume): the training set, its
   tokenised (image, caption) pairs, the tokenizer, the training settings, the device. Build what lasts a
   run here (SCST: the reward's document frequencies).
3. ``step(model, net, batch) -> StepOutput`` every optimiser step: the loss to back-propagate (a scalar
   tensor with gradient) and a dict of scalars to log (``log.jsonl``). ``net`` is the module to call for
   anything that needs gradients (the DDP / ``torch.compile`` wrapper of ``model``); the loop has already
   put ``model`` in train mode and opened the autocast context.
4. ``state_dict()`` / ``load_state_dict()``: tensors that an exact resume needs (a sampling RNG), saved in
   ``state.safetensors`` next to the model's.
5. ``describe()``: ``{"name", "options", "signature"}``, written into every checkpoint as
   ``extra["objective"]`` (the results database and leaderboard read it; a checkpoint without it is XE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from zoo.errors import ZooError
from zoo.registry.manager import get_registry
from zoo.registry.recipes import check_kwargs


class ObjectiveOptionError(ZooError, ValueError):
    """A bad value for an objective option; the message names ``objective.KEY`` and the allowed values."""


@dataclass
class ObjectiveContext:
    """What an objective may look at once per run (``setup``)."""

    train_set: Any
    tokenizer: Any
    #: (P, T+1) every training (image, caption) pair tokenised as the loop trains on it: <bos> … <eos> pad
    pair_tokens: torch.Tensor
    #: (P,) the training-set index of each pair's image
    pair_images: torch.Tensor
    cfg: Any  # zoo.training.config.TrainConfig
    device: torch.device
    rank: int = 0
    world_size: int = 1


@dataclass
class ObjectiveBatch:
    """One step's rows: (image, caption) pairs of the training set, as the loop draws them."""

    inputs: Any  # (B, 3, H, W) transformed images, or cached ``Features`` of the B rows
    captions: torch.Tensor  # (B, W) <bos> … <eos> pad, cut to the batch's longest caption
    images: torch.Tensor  # (B,) training-set index of each row's image
    step: int


@dataclass
class StepOutput:
    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Objective:
    """Base class of training objectives. Subclasses implement :meth:`step` and, when they have options
    worth reading in a signature, :meth:`signature`."""

    #: the registry name (set by subclasses; recorded in checkpoints)
    name: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        self._options = dict(options)

    def options(self) -> dict[str, Any]:
        """The options as given (JSON values), recorded with the objective in checkpoints."""
        return dict(self._options)

    def setup(self, context: ObjectiveContext) -> None:
        """Once per run, before the first step."""

    def step(self, model: Any, net: torch.nn.Module, batch: ObjectiveBatch) -> StepOutput:  # pragma: no cover
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`; a state without this objective's tensors (it was not active
        yet when the state was saved) leaves the objective as ``setup`` made it."""

    def signature(self) -> str:
        """How the model was trained, in one readable string: the name, and the options that differ
        from their defaults in parentheses (``xe``, ``xe(label_smoothing=0.1)``)."""
        return format_signature(self.name, self.options())

    def describe(self) -> dict[str, Any]:
        """``extra["objective"]`` of a checkpoint."""
        return {"name": self.name, "options": self.options(), "signature": self.signature()}


def format_signature(name: str, options: dict[str, Any]) -> str:
    """``name(k=v, ...)``, or ``name`` alone without options; booleans read ``yes``/``no``."""
    parts = [f"{k}={_word(v)}" for k, v in options.items()]
    return f"{name}({', '.join(parts)})" if parts else name


def _word(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


#: ``extra["objective"]`` of a checkpoint that does not record one (it was trained before objectives
#: were plugins, or by a third party that did not say): cross-entropy
XE_DESCRIPTION: dict[str, Any] = {"name": "xe", "options": {}, "signature": "xe"}


def checkpoint_objective(extra: dict[str, Any] | None) -> dict[str, Any]:
    """The objective a checkpoint's ``extra`` records; XE when it records none."""
    got = (extra or {}).get("objective")
    return dict(got) if isinstance(got, dict) and got.get("name") else dict(XE_DESCRIPTION)


def create_objective(name: str, options: dict[str, Any] | None = None, where: str = "--set") -> Objective:
    """The registered objective ``name`` built with ``options``. An unknown name suggests the closest
    registered ones; an unknown option is refused naming ``objective.KEY`` and listing the options."""
    entry = get_registry().get("objective", name)
    options = dict(options or {})
    check_kwargs(where, "objective", entry, options, ZooError, prefix="objective")
    obj = entry.factory(**options)
    if not isinstance(obj, Objective):
        raise ZooError(
            f"objective {entry.name!r} from plugin {entry.plugin!r} ({entry.module}) built a "
            f"{type(obj).__name__}, not a zoo.training.objective.Objective subclass"
        )
    if not type(obj).name:
        type(obj).name = entry.name
    return obj


def check_choice(option: str, value: Any, allowed: dict[str, Any] | tuple[str, ...], default: Any) -> None:
    """``objective.OPTION`` must be one of ``allowed``."""
    if value not in allowed:
        raise ObjectiveOptionError(
            f"objective option objective.{option} must be one of {', '.join(map(str, allowed))}, got "
            f"{value!r} (default {default!r})"
        )


def check_number(option: str, value: Any, ok: Any, allowed: str, default: Any, integer: bool = False) -> Any:
    """``objective.OPTION`` converted to a number and checked with ``ok``; the error says ``allowed``."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if integer:
            if number != int(number):
                raise ValueError
            number = int(number)
        good = ok(number)
    except (TypeError, ValueError, OverflowError):
        good = False
    if not good:
        raise ObjectiveOptionError(
            f"objective option objective.{option} must be {allowed}, got {value!r} (default {default!r})"
        )
    return number


class ObjectiveSchedule:
    """Which objective trains each step of a run: ``train.objective`` throughout, or, with
    ``train.scst_after=S``, cross-entropy (``xe``) for steps 0..S-1 and ``train.objective`` from step S on
    (a switch within one run, as the reference implementations do after their XE epochs)."""

    def __init__(self, cfg: Any, options: dict[str, Any] | None = None) -> None:
        self.main = create_objective(cfg.objective, options)
        self.switch_at: int | None = cfg.scst_after
        self.warmup: Objective | None = None
        if self.switch_at is not None:
            if self.main.name == "xe":
                raise ZooError(
                    f"train.scst_after={self.switch_at} switches from xe to the objective named by "
                    "train.objective, which is xe; add --set train.objective=scst (or --objective scst)"
                )
            self.warmup = create_objective("xe", {})

    def objectives(self) -> list[Objective]:
        return [o for o in (self.warmup, self.main) if o is not None]

    def at(self, step: int) -> Objective:
        """The objective of the step that starts at ``step`` (0-based count of steps already taken)."""
        if self.warmup is not None and self.switch_at is not None and step < self.switch_at:
            return self.warmup
        return self.main

    def setup(self, context: ObjectiveContext) -> None:
        for o in self.objectives():
            o.setup(context)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every objective's resumable tensors, as ``objective/<name>/<key>``."""
        out = {}
        for o in self.objectives():
            for k, v in o.state_dict().items():
                out[f"objective/{o.name}/{k}"] = v.detach().cpu().clone().contiguous()
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for o in self.objectives():
            prefix = f"objective/{o.name}/"
            mine = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if mine:
                o.load_state_dict(mine)
