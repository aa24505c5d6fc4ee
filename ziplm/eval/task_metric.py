"""A task's metric as a torchmetrics `Metric`: per-row outputs, synced across processes, exact.

Each rank sees a shard of the evaluation split. The metric keeps every row's outputs together with
the row's index (``cat`` states, gathered by torchmetrics on ``compute``), drops rows seen twice (a
sampler that pads its shards repeats some), restores dataset order and scores the whole split with the
same code as a single process (`Evaluator`). So an N-process evaluation gives the 1-process numbers,
including SQuAD, whose post-processing needs every window of an example in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from ziplm.data.spec import TaskSpec
from ziplm.eval.evaluate import Evaluator
from ziplm.eval.metrics import summed_nll

_STATES = {
    "classification": ("logits", "labels"),
    "regression": ("logits", "labels"),
    "qa": ("start", "end"),
    "lm": ("nll", "tokens"),
}


class TaskMetric(Metric):
    """The metric of `task` on the split whose raw rows are `examples` and tokenized rows `features`."""

    full_state_update = False

    def __init__(self, task: TaskSpec, examples: datasets.Dataset, features: datasets.Dataset) -> None:
        super().__init__(sync_on_compute=True)
        if task.kind not in _STATES:
            raise ValueError(f"task {task.name!r} has unknown kind {task.kind!r}; known kinds: {sorted(_STATES)}")
        self.task, self.examples, self.features = task, examples, features
        self.add_state("rows", default=[], dist_reduce_fx="cat")
        for name in _STATES[task.kind]:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, rows: torch.Tensor, batch: Mapping[str, torch.Tensor], outputs: Any) -> None:  # type: ignore[override]
        """One batch: the dataset indices of its rows, the batch (for labels) and the model's outputs."""
        self.rows.append(rows.long())
        kind = self.task.kind
        if kind == "qa":
            self.start.append(outputs.start_logits.detach().float())
            self.end.append(outputs.end_logits.detach().float())
        elif kind == "lm":
            labels = batch["labels"].to(outputs.logits.device)
            per_row = [summed_nll(outputs.logits[i : i + 1].detach(), labels[i : i + 1]) for i in range(len(rows))]
            self.nll.append(torch.stack([nll for nll, _ in per_row]).to(rows.device))
            self.tokens.append(torch.tensor([count for _, count in per_row], dtype=torch.long, device=rows.device))
        else:
            self.logits.append(outputs.logits.detach().float())
            self.labels.append(batch["labels"])

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        if isinstance(self.rows, list) and not self.rows:  # after a sync the states are tensors
            raise ValueError(f"no evaluation batches were seen for task {self.task.name!r}")
        rows = dim_zero_cat(self.rows).cpu()
        order = _first_occurrences(rows)
        missing = len(self.features) - len(order)
        if missing:
            raise ValueError(f"the evaluation saw {len(order)} of {len(self.features)} rows; {missing} are missing")
        states = [dim_zero_cat(getattr(self, name)).cpu()[order] for name in _STATES[self.task.kind]]
        evaluator = Evaluator(self.task, self.examples, self.features)
        if self.task.kind == "lm":
            evaluator.add_nll(float(states[0].double().sum()), int(states[1].sum()))
        else:
            evaluator.add_chunk(states[0], states[1])
        return evaluator.compute()


def _first_occurrences(rows: torch.Tensor) -> torch.Tensor:
    """Positions that pick each distinct row index once, sorted by row index (dataset order)."""
    unique, inverse = torch.unique(rows, sorted=True, return_inverse=True)
    first = torch.full((len(unique),), len(rows), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(rows)), reduce="amin")
    return first
