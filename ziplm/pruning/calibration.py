"""Calibration capture: one pass over calibration batches, Hessians of every prunable projection's input.

Hooks sit only on the output projections of the layers being built (attention out-proj and FC2), they
accumulate on the fly and never keep activations. Besides H = mean(2 x xᵀ) over non-padding tokens,
each hook sums the energy Σ‖W x + b‖² of the projection's output: the denominator of the relative
output error reported per level.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.progress import Progress
from torch import nn

from ziplm.core.hessian import HessianAccumulator
from ziplm.models.adapter import SUBLAYERS, Sublayer
from ziplm.models.registry import adapter_for


@dataclass
class ProjectionStats:
    """What one projection saw on the calibration set."""

    hessian: HessianAccumulator
    output_energy: float = 0.0  # Σ over non-padding tokens of ‖W x + b‖²


@dataclass
class CalibrationStats:
    """Per (layer, sublayer) statistics; sublayers already removed are absent."""

    stats: dict[tuple[int, Sublayer], ProjectionStats] = field(default_factory=dict)


def _flat_tokens(tensor: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    flat = tensor.reshape(-1, tensor.shape[-1])
    return flat if mask is None else flat[mask.reshape(-1).to(torch.bool)]


def capture(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    layers: Iterable[int],
    show_progress: bool = True,
) -> CalibrationStats:
    """Run `batches` (dicts of model inputs, with ``attention_mask``) and collect statistics.

    Raises:
        ValueError: if the calibration set is empty or holds no non-padding token.
    """
    adapter = adapter_for(model)
    result = CalibrationStats()
    current: dict[str, torch.Tensor | None] = {"mask": None}
    handles = []

    def make_hook(stats: ProjectionStats) -> Any:
        def hook(_: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            mask = current["mask"]
            stats.hessian.add_batch(inputs[0].detach(), mask)
            stats.output_energy += float(_flat_tokens(output.detach(), mask).double().pow(2).sum())

        return hook

    for layer in layers:
        for sublayer in SUBLAYERS:
            module = adapter.output_projection(model, layer, sublayer)
            if module is None:
                continue
            weight: Any = module.weight
            d_in = int(weight.shape[0 if type(module).__name__ == "Conv1D" else 1])  # Conv1D stores (d_in, d_out)
            stats = ProjectionStats(HessianAccumulator(d_in))
            result.stats[(layer, sublayer)] = stats
            handles.append(module.register_forward_hook(make_hook(stats)))
    batch_list = list(batches)
    if not batch_list:
        raise ValueError("the calibration set is empty: give at least one batch of calibration samples")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), Progress(disable=not show_progress, transient=True) as progress:
            task = progress.add_task("calibration forward passes", total=len(batch_list))
            for batch in batch_list:
                current["mask"] = batch.get("attention_mask")
                model(**batch)
                progress.advance(task)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if any(s.hessian.n_tokens == 0 for s in result.stats.values()):
        raise ValueError("the calibration set holds no token: every position is masked as padding")
    return result
