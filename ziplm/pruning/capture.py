"""Calibration capture: one pass over calibration batches, Hessians of every prunable projection's input.

Hooks sit only on the output projections of the layers being built (attention out-proj and FC2), they
accumulate on the fly and never keep activations. Besides H = mean(2 x xᵀ) over non-padding tokens,
each hook sums the energy Σ‖W x + b‖² of the projection's output: the denominator of the relative
output error reported per level.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.progress import Progress
from torch import nn

from ziplm.core.hessian import HessianAccumulator, TokenMask, hessian_hooks, output_energy
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


def projections(model: nn.Module, layers: Iterable[int]) -> dict[tuple[int, Sublayer], nn.Module]:
    adapter = adapter_for(model)
    found = {}
    for layer in layers:
        for sublayer in SUBLAYERS:
            module = adapter.output_projection(model, layer, sublayer)
            if module is not None:  # a removed sublayer has nothing left to prune
                found[(layer, sublayer)] = module
    return found


@contextmanager
def statistics_hooks(
    modules: Mapping[str, nn.Module],
) -> Iterator[tuple[dict[str, HessianAccumulator], dict[str, float], TokenMask]]:
    """Input Hessians and output energies of `modules` while the block runs forward passes (the one
    definition of both statistics, shared by whole-model and layer-wise calibration)."""
    energy = dict.fromkeys(modules, 0.0)
    with hessian_hooks(modules) as (accumulators, token_mask):

        def energy_hook(name: str) -> Any:
            def hook(_: nn.Module, __: Any, output: torch.Tensor) -> None:
                energy[name] += output_energy(output, token_mask.current)

            return hook

        handles = [m.register_forward_hook(energy_hook(name)) for name, m in modules.items()]
        try:
            yield accumulators, energy, token_mask
        finally:
            for handle in handles:
                handle.remove()


Calibrate = Callable[
    [nn.Module, Sequence[Mapping[str, torch.Tensor]], Mapping[str, nn.Module]],
    tuple[Mapping[str, HessianAccumulator], Mapping[str, float]],
]
"""Runs the calibration forward passes: (model, batches, modules by name) -> (Hessians, output energies)
by name. A run passes Lightning's (``ziplm.lit.phases.calibrate``: all ranks, summed); `in_process` is
the plain loop used outside a run."""


def in_process(show_progress: bool = True) -> Calibrate:
    """The calibration loop in this process, on the model's device."""

    def run(
        model: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]], modules: Mapping[str, nn.Module]
    ) -> tuple[Mapping[str, HessianAccumulator], Mapping[str, float]]:
        device = next(model.parameters()).device
        with (
            statistics_hooks(modules) as (accumulators, energy, token_mask),
            torch.no_grad(),
            Progress(disable=not show_progress, transient=True) as progress,
        ):
            task = progress.add_task("calibration forward passes", total=len(batches))
            for cpu_batch in batches:
                batch = {k: v.to(device) for k, v in cpu_batch.items()}  # calibration data lives on the CPU
                token_mask.set(batch.get("attention_mask"))
                model(**batch)
                progress.advance(task)
        return accumulators, energy

    return run


def capture(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    layers: Iterable[int],
    show_progress: bool = True,
    calibrate: Calibrate | None = None,
) -> CalibrationStats:
    """Run `batches` (dicts of model inputs, with ``attention_mask``) and collect statistics.

    `calibrate` runs the forward passes (default: `in_process`; batches go to the model's device).

    Raises:
        ValueError: if the calibration set is empty or holds no non-padding token.
    """
    batch_list = list(batches)
    if not batch_list:
        raise ValueError("the calibration set is empty: give at least one batch of calibration samples")
    modules = projections(model, layers)
    names = {key: f"{key[0]}.{key[1]}" for key in modules}
    was_training = model.training
    model.eval()
    try:
        run = calibrate or in_process(show_progress)
        accumulators, energy = run(model, batch_list, {names[k]: m for k, m in modules.items()})
    finally:
        model.train(was_training)
    return CalibrationStats(collect_stats(names, accumulators, energy))


def collect_stats(
    names: Mapping[tuple[int, Sublayer], str], accumulators: Mapping[str, Any], energy: Mapping[str, Any]
) -> dict[tuple[int, Sublayer], ProjectionStats]:
    """Each projection's statistics from the hooks' outputs (keyed by hook name); shared by whole-model and
    layer-wise calibration so both refuse an all-padding calibration set alike.

    Raises:
        ValueError: if a projection saw no non-padding token.
    """
    stats = {k: ProjectionStats(accumulators[name], energy[name]) for k, name in names.items()}
    if any(s.hessian.n_tokens == 0 for s in stats.values()):
        raise ValueError("the calibration set holds no token: every position is masked as padding")
    return stats
