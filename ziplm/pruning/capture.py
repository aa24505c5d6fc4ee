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

from ziplm.core.hessian import HessianAccumulator, hessian_hooks
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


def _projections(model: nn.Module, layers: Iterable[int]) -> dict[tuple[int, Sublayer], nn.Module]:
    adapter = adapter_for(model)
    found = {}
    for layer in layers:
        for sublayer in SUBLAYERS:
            module = adapter.output_projection(model, layer, sublayer)
            if module is not None:  # a removed sublayer has nothing left to prune
                found[(layer, sublayer)] = module
    return found


def capture(
    model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], layers: Iterable[int], show_progress: bool = True
) -> CalibrationStats:
    """Run `batches` (dicts of model inputs, with ``attention_mask``) and collect statistics.

    Batches are moved to the model's device (a GPU run keeps its calibration set in host memory).

    Raises:
        ValueError: if the calibration set is empty or holds no non-padding token.
    """
    batch_list = list(batches)
    if not batch_list:
        raise ValueError("the calibration set is empty: give at least one batch of calibration samples")
    modules = _projections(model, layers)
    device = next(model.parameters()).device
    names = {key: f"{key[0]}.{key[1]}" for key in modules}
    energy = dict.fromkeys(modules, 0.0)
    was_training = model.training
    model.eval()
    with hessian_hooks({names[k]: m for k, m in modules.items()}) as (accumulators, token_mask):

        def energy_hook(key: tuple[int, Sublayer]) -> Any:
            def hook(_: nn.Module, __: Any, output: torch.Tensor) -> None:
                energy[key] += float(_flat_tokens(output.detach(), token_mask.current).double().pow(2).sum())

            return hook

        handles = [m.register_forward_hook(energy_hook(k)) for k, m in modules.items()]
        try:
            with torch.no_grad(), Progress(disable=not show_progress, transient=True) as progress:
                task = progress.add_task("calibration forward passes", total=len(batch_list))
                for cpu_batch in batch_list:
                    batch = {k: v.to(device) for k, v in cpu_batch.items()}  # calibration data lives on the CPU
                    token_mask.set(batch.get("attention_mask"))
                    model(**batch)
                    progress.advance(task)
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
    stats = {k: ProjectionStats(accumulators[names[k]], energy[k]) for k in modules}
    if any(s.hessian.n_tokens == 0 for s in stats.values()):
        raise ValueError("the calibration set holds no token: every position is masked as padding")
    return CalibrationStats(stats)
