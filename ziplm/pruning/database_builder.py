"""Build the levels database of a model: calibration capture -> structured OBS per sublayer -> errors.

Resumable: layers already in the database folder are skipped, and calibration statistics are only
collected for the layers still missing. Works on dense models and on already pruned ones (gradual
schedules): level keys are always counts of the *dense* width, restricted to what is still there.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import Progress
from torch import nn

from ziplm.core.database import DatabaseFingerprint, LevelDatabase, LevelEntry
from ziplm.core.levels import ffn_levels, head_levels
from ziplm.core.structure import ModelDims, Structure
from ziplm.models.adapter import SUBLAYERS, Sublayer, current_structure, get_output_weight
from ziplm.models.registry import adapter_for
from ziplm.pruning.baselines import FISHER_METHODS, SEEDED_METHODS, SOLVERS, Solver, obs_solver
from ziplm.pruning.calibration import ProjectionStats, capture

# Version of what a build stores, recorded in every fingerprint: bump it whenever a change to a solver
# (OBS, the baselines, Fisher), the error formula or the level grids changes the stored levels, so that a
# resumed run refuses levels computed by older code instead of mixing them in.
#   levels-v1: manifests written before this version was recorded.
#   levels-v2: the random baseline draws from the run's seed, independently per layer and sublayer.
DATABASE_FORMAT = "levels-v2"


@dataclass(frozen=True)
class DatabaseSettings:
    """Knobs of a database build (all recorded in its fingerprint)."""

    damp: float = 0.01
    ffn_group_size: int = 1
    ffn_grid_ratio: float = 0.9
    ffn_round_to: int = 1
    method: str = "obs"  # obs = ZipLM; magnitude / random / fisher / fisher-norescale are baselines
    seed: int = 0  # the run's seed: draws the random baseline's structures (no effect on other methods)


def _digest_tensors(tensors: Sequence[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(str((tuple(t.shape), str(t.dtype))).encode())
        digest.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def fingerprint(
    model: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]], settings: DatabaseSettings
) -> DatabaseFingerprint:
    """What the database depends on: weights (and structure), calibration tokens, damping and grids."""
    adapter = adapter_for(model)
    dims = adapter.dims(model)
    state = model.state_dict()
    structure = str(current_structure(model, dims).to_dict()).encode()
    model_digest = hashlib.sha256(_digest_tensors([state[k] for k in sorted(state)]).encode() + structure)
    calibration = [t for b in batches for k in sorted(b) for t in [b[k]]]
    return DatabaseFingerprint(
        model=model_digest.hexdigest()[:16],
        calibration=_digest_tensors(calibration),
        damp=settings.damp,
        head_levels=tuple(head_levels(dims.num_heads)),
        ffn_levels=tuple(_ffn_grid(dims, settings)),
        ffn_group_size=settings.ffn_group_size,
        dims=dims.to_dict(),
        method=settings.method,
        version=DATABASE_FORMAT,
        seed=settings.seed if settings.method in SEEDED_METHODS else None,
    )


def sublayer_seed(seed: int, layer: int, sublayer: str) -> int:
    """A seed for one sublayer's random draw, derived from the run's: every sublayer draws independently."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{layer}/{sublayer}".encode()).digest()[:8], "little") >> 1


def _ffn_grid(dims: ModelDims, settings: DatabaseSettings) -> list[int]:
    return ffn_levels(
        dims.intermediate_size,
        ratio=settings.ffn_grid_ratio,
        round_to=settings.ffn_round_to,
        group_size=settings.ffn_group_size,
    )


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


def open_database(
    model: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]], folder: str | Path, settings: DatabaseSettings
) -> tuple[LevelDatabase, list[int]]:
    """The database in `folder` for this model × data × settings, and the layers still to build (resume)."""
    database = LevelDatabase.open(folder, fingerprint(model, batches, settings))
    done = database.completed_layers()
    return database, [i for i in range(adapter_for(model).dims(model).num_layers) if i not in done]


def build_database(
    model: nn.Module,
    batches: Sequence[Mapping[str, torch.Tensor]],
    folder: str | Path,
    settings: DatabaseSettings | None = None,
    show_progress: bool = True,
) -> LevelDatabase:
    """Build (or resume) the levels database of `model` on calibration `batches` in `folder`.

    Fisher methods (`ziplm.pruning.fisher`) need labelled batches (``with_labels=True``).
    """
    settings = settings or DatabaseSettings()
    if settings.method in FISHER_METHODS:
        # Imported here: the Fisher builder reuses this module's settings and open_database.
        from ziplm.pruning.fisher import build_fisher_database

        return build_fisher_database(model, batches, folder, settings, show_progress)
    if settings.method not in SOLVERS:
        known = sorted([*SOLVERS, *FISHER_METHODS])
        raise ValueError(f"unknown structure-selection method {settings.method!r}; choose one of {known}")
    if not batches:
        raise ValueError("the calibration set is empty: give at least one batch of calibration samples")
    adapter = adapter_for(model)
    dims = adapter.dims(model)
    database, todo = open_database(model, batches, folder, settings)
    if not todo:
        return database
    fp = database.fingerprint
    started = time.perf_counter()
    stats = capture(model, batches, todo, show_progress=show_progress).stats
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
    solver = SOLVERS[settings.method](sublayer_seed(settings.seed, layer, sublayer))
    return _sublayer_entries(weight, stats.get((layer, sublayer)), kept, grid, width, group, settings.damp, solver)
