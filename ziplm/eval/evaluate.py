"""Scoring a task's outputs (`Evaluator`), the evaluation precisions, and the task loss SPDY ranks by.

An `Evaluator` turns a split's outputs, in dataset order, into the task's metric. Evaluation itself is a
Lightning phase (``ziplm.lit.phases.evaluate``: ``Trainer.validate`` on the run's devices, through the
process-synced `ziplm.eval.task_metric.TaskMetric`, which hands the gathered rows to an `Evaluator`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import torch
from torch import nn

from ziplm.data.qa import postprocess_qa, squad_references
from ziplm.data.spec import TaskSpec
from ziplm.eval.metrics import compute_metric, summed_nll


class Evaluator:
    """Accumulates a task's outputs over an evaluation split and turns them into its metric."""

    def __init__(self, task: TaskSpec, examples: datasets.Dataset, features: datasets.Dataset) -> None:
        self.task, self.examples, self.features = task, examples, features
        self.reset()

    def reset(self) -> None:
        self._chunks: list[Any] = []
        self._nll, self._tokens = 0.0, 0

    def update(self, batch: Mapping[str, torch.Tensor], outputs: Any) -> None:
        """Record one batch (rows in dataset order) and the model's outputs for it."""
        kind = self.task.kind
        if kind == "qa":
            self._chunks.append(
                (outputs.start_logits.detach().float().cpu(), outputs.end_logits.detach().float().cpu())
            )
        elif kind == "lm":
            nll, tokens = summed_nll(outputs.logits.detach(), batch["labels"].to(outputs.logits.device))
            self._nll += float(nll)
            self._tokens += tokens
        else:
            self._chunks.append((outputs.logits.detach().float().cpu(), batch["labels"].cpu()))

    def add_chunk(self, first: torch.Tensor, second: torch.Tensor) -> None:
        """Rows already gathered in dataset order: (logits, labels), or (start, end) logits for QA."""
        self._chunks.append((first, second))

    def add_nll(self, nll: float, tokens: int) -> None:
        """A language model's summed negative log-likelihood over `tokens` scored tokens."""
        self._nll += nll
        self._tokens += tokens

    def compute(self) -> dict[str, float]:
        """The metric dict (see `ziplm.eval.metrics.compute_metric`)."""
        kind = self.task.kind
        if kind == "lm":
            return compute_metric("perplexity", self._nll, self._tokens)
        if not self._chunks:
            raise ValueError(f"no evaluation batches were seen for task {self.task.name!r}")
        if kind == "qa":
            starts = torch.cat([s for s, _ in self._chunks])
            ends = torch.cat([e for _, e in self._chunks])
            answers = postprocess_qa(self.examples, self.features, starts, ends)
            return compute_metric("squad", answers, squad_references(self.examples))
        logits = torch.cat([lg for lg, _ in self._chunks])
        labels = torch.cat([lb for _, lb in self._chunks])
        predictions = logits.squeeze(-1) if kind == "regression" else logits
        return compute_metric(self.task.metric, predictions, labels)


# Lightning precision names → the autocast dtype an evaluation runs under (None: the weights' own dtype).
EVAL_PRECISIONS: dict[str, torch.dtype | None] = {
    "32-true": None,
    "32": None,
    "bf16-mixed": torch.bfloat16,
    "16-mixed": torch.float16,
}


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Autocast for a mixed `precision` on `device` (weights untouched), or nothing for full precision.

    Raises:
        ValueError: an unknown precision name.
    """
    if precision not in EVAL_PRECISIONS:
        raise ValueError(f"unknown evaluation precision {precision!r}; choose one of {sorted(EVAL_PRECISIONS)}")
    dtype = EVAL_PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def task_loss(model: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]], precision: str = "32-true") -> float:
    """Mean task loss (HF's ``outputs.loss``, labels included in the batches) over `batches`.

    SPDY scores candidate architectures with this on a few calibration batches (moved to the model's
    device, scored in the run's evaluation `precision`).
    """
    if not batches:
        raise ValueError("task_loss needs at least one labelled batch")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.inference_mode(), precision_context(precision, device):
        for batch in batches:
            out = model(**{k: v.to(device) for k, v in batch.items()})
            if out.loss is None:
                raise ValueError("the model returned no loss: the loss batches carry no labels")
            total += float(out.loss)
    model.train(was_training)
    return total / len(batches)
