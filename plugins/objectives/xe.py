"""``xe``: teacher-forced cross-entropy, the objective every zoo model trains with first.

The mean token cross-entropy of the reference captions (``CaptionModel.loss``: padding is left out before
the output layer), with optional label smoothing. The loss is exactly the one ``zoo train`` computed
before objectives were plugins, so runs and their numbers are unchanged.
"""

from __future__ import annotations

from typing import Any

import zoo
from zoo.training.objective import Objective, ObjectiveBatch, ObjectiveContext, StepOutput, check_number


class CrossEntropy(Objective):
    """Teacher-forced cross-entropy over the reference captions (maximum likelihood).

    Options: ``label_smoothing`` (0 ≤ x < 1; default: the run's ``train.label_smoothing``, itself 0)."""

    name = "xe"

    def __init__(self, label_smoothing: float | None = None) -> None:
        super().__init__()
        self.label_smoothing = None if label_smoothing is None else check_number(
            "label_smoothing", label_smoothing, lambda v: 0 <= v < 1, "a number from 0 up to, not including, 1", None
        )

    def setup(self, context: ObjectiveContext) -> None:
        if self.label_smoothing is None:
            self.label_smoothing = float(context.cfg.label_smoothing)

    def options(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing} if self.label_smoothing else {}

    def step(self, model: Any, net: Any, batch: ObjectiveBatch) -> StepOutput:
        loss = model.loss(batch.inputs, batch.captions, self.label_smoothing or 0.0, net=net)
        return StepOutput(loss)


@zoo.hookimpl
def zoo_register(registry: Any) -> None:
    registry.add_objective("xe", CrossEntropy)
