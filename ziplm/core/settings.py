"""Distillation settings: the ``distill`` config group and the loss weights it gives (``ziplm.core.distill``
computes the losses and re-exports both). Plain Python (no torch), so the config layer loads them cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DistillWeights:
    """λ_task·L_task + λ_logit·KL·T² + λ_token·L_token (defaults: spec §6, ours)."""

    task: float = 0.0
    logit: float = 1.0
    token: float = 1.0
    temperature: float = 2.0

    def __post_init__(self) -> None:
        if min(self.task, self.logit, self.token) < 0 or self.temperature <= 0:
            raise ValueError(f"distillation weights must be >= 0 and temperature > 0, got {self}")
        if self.task == self.logit == self.token == 0:
            raise ValueError("all distillation weights are 0: nothing would be trained")


@dataclass
class DistillSettings:
    """The ``distill`` config group (``conf/distill/*.yaml``): fine-tuning of each pruned member."""

    epochs_per_stage: float = 0.0  # distillation epochs after each pruning stage (0 = none: one-shot)
    learning_rate: float = 5e-5  # fresh optimizer and LR schedule per stage
    task: float = 0.0  # λ_task: the task's own loss
    logit: float = 1.0  # λ_logit: KL to the teacher's logits (·T²)
    token: float = 1.0  # λ_token: layer-wise hidden-state MSE
    temperature: float = 2.0
    # Dropout probability of the student while it is distilled (null = the model's own). 0 suits a student
    # that must reproduce the teacher's outputs exactly (sentence embedders): with little data, dropout's
    # noise costs more fidelity than its regularisation buys. The saved member keeps its config's dropout.
    dropout: float | None = None

    @property
    def weights(self) -> DistillWeights:
        """The loss weights (validated: non-negative, not all zero, temperature > 0)."""
        return DistillWeights(
            task=float(self.task), logit=float(self.logit), token=float(self.token), temperature=float(self.temperature)
        )
