"""Lightning runs the run's non-training phases too: evaluation (``trainer.validate``) and calibration
(``trainer.test`` of a hook-carrying module), on whatever strategy the run's trainer settings name.

The network is held outside the LightningModule's tree: Lightning then neither wraps it, nor casts it,
nor moves it to the CPU at teardown (it stays where the run placed it: the teacher is shared by every
phase). Each rank reads its own strided shard of the batches (no padding: every row counts once); the
metric and the Hessians are summed over ranks, so N processes see all of the data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from ziplm.core.hessian import HessianAccumulator, hessian_hooks, output_energy
from ziplm.data.features import model_input_columns
from ziplm.data.spec import TaskSpec
from ziplm.eval.task_metric import TaskMetric
from ziplm.lit.distributed import all_reduce_sum, rank, world_size

LABEL_KEYS = ("labels", "start_positions", "end_positions")
_PHASE_KEYS = ("accelerator", "devices", "num_nodes", "strategy")


def phase_trainer(trainer: Mapping[str, Any], root_dir: Path | None, precision: str, show_progress: bool) -> L.Trainer:
    """A Trainer for one evaluation/calibration pass: the run's devices and strategy, the given precision."""
    kwargs = {k: trainer[k] for k in _PHASE_KEYS if trainer.get(k) is not None}
    return L.Trainer(
        **kwargs,
        precision=precision,  # type: ignore[arg-type]
        default_root_dir=str(root_dir) if root_dir else None,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=show_progress,
        use_distributed_sampler=False,  # shards are strided here, without the padding rows a sampler adds
        num_sanity_val_steps=0,
    )


class _Rows(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Tokenized rows as model-input tensors plus each row's index (the metric restores order with it)."""

    def __init__(self, features: datasets.Dataset) -> None:
        columns = model_input_columns(features) + [c for c in LABEL_KEYS if c in features.column_names]
        self.table = features.with_format("torch", columns=columns)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {**self.table[index], "row": torch.tensor(index)}


def _shard_loader(dataset: Any, batch_size: int) -> DataLoader:
    """This rank's strided share of `dataset` (rows r, r+N, ...), in order."""
    _check_rows(len(dataset), "evaluation rows")
    indices = list(range(rank(), len(dataset), world_size()))
    return DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size, shuffle=False)


def _shard_batches(batches: Sequence[Mapping[str, torch.Tensor]]) -> DataLoader:
    """This rank's calibration batches: batches r, r+N, ... (each batch's Gram is then computed exactly as
    in one process, so the sums differ by float64 rounding only); with fewer batches than ranks, chunk r
    of N of every batch (Hessians are sums over tokens: splitting a batch changes them by float32
    rounding of the per-chunk Gram, and every rank gets work)."""
    _check_rows(sum(len(next(iter(b.values()))) for b in batches), "calibration samples")
    if len(batches) >= world_size():
        return DataLoader(list(batches[rank() :: world_size()]), batch_size=None, shuffle=False)  # type: ignore[arg-type]
    mine = []
    for batch in batches:
        part = {k: torch.tensor_split(v, world_size())[rank()] for k, v in batch.items()}
        if len(next(iter(part.values()))):
            mine.append(part)
    return DataLoader(mine, batch_size=None, shuffle=False)  # type: ignore[arg-type]


def _check_rows(count: int, what: str) -> None:
    if count < world_size():
        raise ValueError(f"{count} {what} cannot be shared by {world_size()} processes: use more, or fewer devices")


class _Validation(L.LightningModule):
    def __init__(self, model: nn.Module, metric: TaskMetric) -> None:
        super().__init__()
        self._model = [model]  # outside the module tree (see the module docstring)
        self.metric = metric
        self.result: dict[str, float] = {}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        rows = batch.pop("row")
        outputs = self._model[0](**{k: v for k, v in batch.items() if k not in LABEL_KEYS})
        self.metric.update(rows, batch, outputs)

    def on_validation_epoch_end(self) -> None:
        self.result = self.metric.compute()  # gathered from every rank
        self.metric.reset()


def evaluate(
    model: nn.Module,
    task: TaskSpec,
    examples: datasets.Dataset,
    features: datasets.Dataset,
    trainer: Mapping[str, Any],
    batch_size: int = 64,
    precision: str | None = None,
    show_progress: bool = True,
) -> dict[str, float]:
    """Metric of `model` on one evaluation split, by ``Trainer.validate`` on the run's devices.

    `precision` (a Lightning precision name; default the trainer's) is the same for the dense model and
    every member. The model is scored in eval mode and left in the mode and place it came in.
    """
    if len(features) == 0:
        raise ValueError(f"the evaluation split of task {task.name!r} has no rows")
    module = _Validation(model, TaskMetric(task, examples, features))
    was_training = model.training
    model.eval()
    try:
        phase = phase_trainer(trainer, None, precision or str(trainer.get("precision", "32-true")), show_progress)
        phase.validate(module, dataloaders=_shard_loader(_Rows(features), batch_size), verbose=False)
    finally:
        model.train(was_training)
    return module.result


class _Calibration(L.LightningModule):
    def __init__(self, model: nn.Module, modules: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self._model, self._targets = [model], dict(modules)
        self.accumulators: dict[str, HessianAccumulator] = {}
        self.energy: dict[str, float] = dict.fromkeys(modules, 0.0)

    def on_test_epoch_start(self) -> None:
        self._stack = ExitStack()
        self.accumulators, self._mask = self._stack.enter_context(hessian_hooks(self._targets))
        for name, module in self._targets.items():
            self._stack.callback(module.register_forward_hook(self._energy_hook(name)).remove)

    def _energy_hook(self, name: str) -> Callable[..., None]:
        def hook(_: nn.Module, __: Any, output: torch.Tensor) -> None:
            self.energy[name] += output_energy(output, self._mask.current)

        return hook

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._mask.set(batch.get("attention_mask"))
        self._model[0](**{k: v for k, v in batch.items() if k not in LABEL_KEYS})

    def on_test_epoch_end(self) -> None:
        self._stack.close()


def calibrate(
    model: nn.Module,
    batches: Sequence[Mapping[str, torch.Tensor]],
    modules: Mapping[str, nn.Module],
    trainer: Mapping[str, Any],
    show_progress: bool = True,
) -> tuple[dict[str, HessianAccumulator], dict[str, float]]:
    """Input Hessians (and output energies) of `modules` over calibration `batches`, by ``Trainer.test``.

    Every rank runs its share of each batch; the sums of 2·xxᵀ, the token counts and the energies are
    added over ranks, so each rank ends with the Hessians of all the batches (a 1-process run's, up to
    float64 rounding). Calibration runs in full precision: the Hessians are the solver's input.
    """
    if not batches:
        raise ValueError("the calibration set is empty: give at least one batch of calibration samples")
    module = _Calibration(model, modules)
    was_training = model.training
    model.eval()
    try:
        phase = phase_trainer(trainer, None, "32-true", show_progress)
        phase.test(module, dataloaders=_shard_batches(batches), verbose=False)
    finally:
        model.train(was_training)
    accumulators, energy = module.accumulators, module.energy
    for name in sorted(modules):  # same order on every rank: each all-reduce pairs up
        accumulators[name] = _summed(accumulators.get(name), model)
        energy[name] = float(all_reduce_sum(torch.tensor([energy[name]], dtype=torch.float64)).item())
    return accumulators, energy


def _summed(acc: HessianAccumulator | None, model: nn.Module) -> HessianAccumulator:
    """`acc` summed over ranks (a rank whose shard was empty contributes zeros)."""
    total, tokens = acc.sum_and_count() if acc is not None else (None, 0)
    device = next(model.parameters()).device
    width = torch.tensor([total.shape[0] if total is not None else 0], device=device)
    if world_size() > 1:
        torch.distributed.all_reduce(width, op=torch.distributed.ReduceOp.MAX)
    total = total if total is not None else torch.zeros(int(width), int(width), dtype=torch.float64, device=device)
    count = all_reduce_sum(torch.tensor([tokens], dtype=torch.float64, device=total.device))
    return HessianAccumulator.from_sum(all_reduce_sum(total), int(count.item()))
