"""Evaluate an in-memory model on a task's evaluation split, and its task loss on labelled batches.

One `Evaluator` per split: ``update`` with each batch's model outputs (in dataset order), then
``compute``. The plain loop `evaluate` and the Lightning validation hooks both use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import datasets
import torch
from rich.progress import Progress
from torch import nn

from ziplm.data.features import model_input_columns
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


def batches_in_order(
    features: datasets.Dataset, batch_size: int, columns: Sequence[str] | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Consecutive batches of `features` (model inputs and labels), in dataset order."""
    wanted = list(
        columns or [*model_input_columns(features), *(["labels"] if "labels" in features.column_names else [])]
    )
    table = features.with_format("torch", columns=wanted)
    for begin in range(0, len(table), batch_size):
        rows = table[begin : begin + batch_size]
        yield {k: v for k, v in rows.items() if isinstance(v, torch.Tensor)}


def _model_inputs(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items() if k != "labels"}


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


def evaluate(
    model: nn.Module,
    task: TaskSpec,
    examples: datasets.Dataset,
    features: datasets.Dataset,
    batch_size: int = 64,
    show_progress: bool = True,
    precision: str = "32-true",
) -> dict[str, float]:
    """Metric of `model` on one evaluation split (examples = raw rows, features = tokenized).

    Batches go to the model's device; `precision` (a Lightning precision name) decides autocast, so the
    dense model and every member of a run are scored in one declared precision.
    """
    evaluator = Evaluator(task, examples, features)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = (len(features) + batch_size - 1) // batch_size
    with (
        torch.inference_mode(),
        precision_context(precision, device),
        Progress(disable=not show_progress, transient=True) as progress,
    ):
        bar = progress.add_task(f"evaluating {task.name}", total=total)
        for batch in batches_in_order(features, batch_size):
            evaluator.update(batch, model(**_model_inputs(batch, device)))
            progress.advance(bar)
    model.train(was_training)
    return evaluator.compute()


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
