"""Build the levels database of a model: calibration capture -> structured OBS per sublayer -> errors.

Resumable: layers already in the database folder are skipped, and calibration statistics are only
collected for the layers still missing. Works on dense models and on already pruned ones (gradual
schedules): level keys are always counts of the *dense* width, restricted to what is still there.
Calibration is one whole-model pass (`ziplm.pruning.capture`: every missing layer's Hessians at once) or,
with ``calibration="layerwise"``, block by block (`ziplm.pruning.layerwise`: one layer's at a time).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from rich.progress import Progress
from torch import nn

from ziplm.core.database import DatabaseFingerprint, LevelDatabase, LevelEntry
from ziplm.core.structure import ModelDims, Structure
from ziplm.models.adapter import SUBLAYERS, Sublayer, current_structure, get_output_weight
from ziplm.models.registry import adapter_for
from ziplm.pruning.baselines import Solver, obs_solver
from ziplm.pruning.capture import Calibrate, ProjectionStats, capture
from ziplm.pruning.fisher import build_fisher_database
from ziplm.pruning.layerwise import calibrate_layerwise
from ziplm.pruning.levels_database import (
    DATABASE_FORMAT,
    DatabaseSettings,
    fingerprint,
    open_database,
    sublayer_seed,
)
from ziplm.pruning.methods import method
from ziplm.pruning.settings import check_calibration_mode

__all__ = ["DATABASE_FORMAT", "DatabaseSettings", "build_database", "fingerprint", "open_database", "sublayer_seed"]


def _sublayer_entries(
    weight: torch.Tensor,
    stats: ProjectionStats | None,
    kept_ids: tuple[int, ...],
    grid: Sequence[int],
    unit_width: int,
    group: int,
    damp: float,
    solver: Solver = obs_solver,
) -> list[LevelEntry]:
    """Run OBS for one sublayer and turn its levels into database entries with relative errors.

    `unit_width` is the number of input columns per unit (head_dim for heads, 1 for neurons) and
    `group` the number of units OBS removes together (FFN groups of g neurons).
    """
    # Keys are dense-width counts; an already pruned sublayer keeps its current size as a level too.
    levels = sorted({k for k in grid if k <= len(kept_ids)} | {len(kept_ids)}, reverse=True)
    removal = LevelEntry(keep=0, ids=torch.empty(0, dtype=torch.long), weight=weight[:, :0].float(), error=1.0)
    if not kept_ids or stats is None:
        return [removal]
    nonzero = [k for k in levels if k > 0]
    hessian = stats.hessian.hessian()
    result = solver(weight.double(), hessian, unit_width * group, [k // group for k in nonzero], damp)
    diag = hessian.diagonal()
    dead = diag == 0
    base = weight.double().clone()
    base[:, dead] = 0.0  # the solver's view: dead inputs never reach the output
    # Mean curvature the solver damped with (dead diagonals count as 1).
    mean_curvature = float(torch.where(dead, torch.ones_like(diag), diag).mean())
    ids = torch.as_tensor(kept_ids, dtype=torch.long)
    entries = []
    for keep, level in zip(nonzero, result.levels, strict=True):
        cols = _columns(level.kept_groups, unit_width * group)
        delta_sq = float(
            base.pow(2).sum() - base[:, cols].pow(2).sum() + (level.weight.double() - base[:, cols]).pow(2).sum()
        )
        # level.loss = ½ tr(ΔW (H + λμI) ΔWᵀ); subtracting the damping term leaves the data term, and
        # Σ_tokens ‖ΔW x‖² = N · ½ tr(ΔW H ΔWᵀ) (H = mean 2 x xᵀ): no second pass over the data.
        data_loss = max(level.loss - 0.5 * damp * mean_curvature * delta_sq, 0.0)
        entries.append(
            LevelEntry(
                keep=keep,
                ids=ids[_columns(level.kept_groups, group)],
                weight=level.weight.float(),
                error=stats.hessian.n_tokens * data_loss / max(stats.output_energy, 1e-30),
            )
        )
    return entries + ([removal] if 0 in levels else [])


def _columns(groups: torch.Tensor, width: int) -> torch.Tensor:
    return (groups.long()[:, None] * width + torch.arange(width)).reshape(-1)


def build_database(
    model: nn.Module,
    batches: Sequence[Mapping[str, torch.Tensor]],
    folder: str | Path,
    settings: DatabaseSettings | None = None,
    show_progress: bool = True,
    calibrate: Calibrate | None = None,
    device: torch.device | str | None = None,
) -> LevelDatabase:
    """Build (or resume) the levels database of `model` on calibration `batches` in `folder`.

    `calibrate` runs the whole-model calibration passes (default: in this process; a run passes
    Lightning's). ``settings.calibration="layerwise"`` calibrates block by block in this process instead
    (`ziplm.pruning.layerwise`: memory flat in depth), each block on `device` (default: the model's), and
    does not use `calibrate`; it gives the same database.

    The method (``settings.method``) comes from `ziplm.pruning.methods.REGISTRY`: per-level solvers run
    here, Fisher methods (`ziplm.pruning.fisher`) need labelled batches (``with_labels=True``).
    """
    settings = settings or DatabaseSettings()
    check_calibration_mode(settings.calibration, settings.method)
    chosen = method(settings.method)  # ValueError naming every registered method
    if chosen.selection == "fisher":
        return build_fisher_database(model, batches, folder, settings, show_progress, calibrate)
    if not chosen.builds_database:
        raise ValueError(f"structure-selection method {chosen.name!r} builds no levels database")
    if not batches:
        raise ValueError("the calibration set is empty: give at least one batch of calibration samples")
    adapter = adapter_for(model)
    dims = adapter.dims(model)
    database, todo = open_database(model, batches, folder, settings)
    if not todo:
        return database
    if settings.calibration == "layerwise":
        _build_layerwise(model, batches, database, todo, settings, show_progress, device)
        return database
    fp = database.fingerprint
    started = time.perf_counter()
    stats = capture(model, batches, todo, show_progress=show_progress, calibrate=calibrate).stats
    database.build_seconds["calibration"] = time.perf_counter() - started
    started = time.perf_counter()
    structure = current_structure(model, dims)
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("structured OBS per layer", total=len(todo))
        for layer in todo:
            entries: dict[str, list[LevelEntry]] = {}
            for sublayer in SUBLAYERS:
                entries[sublayer] = _layer_sublayer(model, layer, sublayer, stats, structure, dims, fp, settings)
            database.add_layer(layer, entries)
            stats.pop((layer, "attention"), None)  # free the Hessians of finished layers
            stats.pop((layer, "ffn"), None)
            progress.advance(task)
    database.build_seconds["obs"] = time.perf_counter() - started
    return database


def _build_layerwise(
    model: nn.Module,
    batches: Sequence[Mapping[str, torch.Tensor]],
    database: LevelDatabase,
    todo: list[int],
    settings: DatabaseSettings,
    show_progress: bool,
    device: torch.device | str | None,
) -> None:
    """The layers in `todo`, each solved and written as soon as its block has seen the calibration set."""
    dims = adapter_for(model).dims(model)
    structure = current_structure(model, dims)
    solving = 0.0
    started = time.perf_counter()

    def solve(layer: int, stats: dict[tuple[int, Sublayer], ProjectionStats]) -> None:
        nonlocal solving
        begun = time.perf_counter()
        fp = database.fingerprint
        entries: dict[str, list[LevelEntry]] = {
            s: _layer_sublayer(model, layer, s, stats, structure, dims, fp, settings) for s in SUBLAYERS
        }
        database.add_layer(layer, entries)
        solving += time.perf_counter() - begun

    calibrate_layerwise(model, batches, todo, solve, device=device, show_progress=show_progress)
    database.build_seconds["calibration"] = time.perf_counter() - started - solving
    database.build_seconds["obs"] = solving


def _layer_sublayer(
    model: nn.Module,
    layer: int,
    sublayer: Sublayer,
    stats: dict[tuple[int, Sublayer], ProjectionStats],
    structure: Structure,
    dims: ModelDims,
    fp: DatabaseFingerprint,
    settings: DatabaseSettings,
) -> list[LevelEntry]:
    adapter = adapter_for(model)
    layer_structure = structure.layers[layer]
    if sublayer == "attention":
        kept, grid, width, group = layer_structure.heads, fp.head_levels, dims.head_dim, 1
    else:
        kept, grid, width, group = layer_structure.neurons, fp.ffn_levels, 1, settings.ffn_group_size
    removed = adapter.output_projection(model, layer, sublayer) is None
    weight = torch.zeros(dims.hidden_size, 0) if removed else get_output_weight(adapter, model, layer, sublayer)
    solver = method(settings.method).make_solver(sublayer_seed(settings.seed, layer, sublayer))
    return _sublayer_entries(weight, stats.get((layer, sublayer)), kept, grid, width, group, settings.damp, solver)
