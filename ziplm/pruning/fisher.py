"""Fisher mask search baseline (Kwon et al., "A Fast Post-Training Pruning Framework for Transformers", 2022).

Every attention head and FFN neuron (or group of ``ffn_group_size`` neurons) gets a mask variable m = 1
that scales its input columns of the sublayer's output projection — the same effect as Kwon et al.'s
head mask on the attention probabilities and neuron mask on the FFN activations. The importance of a
unit is the diagonal of the empirical Fisher of the task loss w.r.t. its mask,
``I_u = ½ Σ_samples (∂L_sample/∂m_u)²``: a second-order estimate of the loss increase when m_u → 0.

To compare *selection rules* only, the result is written as an ordinary levels database: per level the
``keep`` most important units are kept, the level's "error" is the summed importance of the removed
units (so a whole module costs the importance of all its units, not the OBS database's 1.0), and the
weights are left as they are. The DP / SPDY search, stitching and everything after it are shared with
ZipLM. ``fisher`` additionally applies Kwon et al.'s least-squares mask tuning (rescaled kept columns,
see `rescaled_masks`); ``fisher-norescale`` keeps the masks binary.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch import nn

from ziplm.core.database import LevelDatabase, LevelEntry
from ziplm.core.structure import ModelDims
from ziplm.models.adapter import SUBLAYERS, Sublayer, current_structure, unwrap_linear_weight
from ziplm.models.registry import adapter_for
from ziplm.pruning.capture import Calibrate, ProjectionStats, capture
from ziplm.pruning.levels_database import DatabaseSettings, open_database
from ziplm.pruning.methods import METHODS, method
from ziplm.pruning.settings import check_calibration_mode

LABEL_KEYS = ("labels", "start_positions", "end_positions")
Key = tuple[int, Sublayer]


def _unit_width(dims: ModelDims, sublayer: Sublayer, ffn_group_size: int) -> int:
    """Input columns of the output projection per mask variable."""
    return dims.head_dim if sublayer == "attention" else ffn_group_size


@contextmanager
def mask_hooks(model: nn.Module, layers: Sequence[int], ffn_group_size: int = 1) -> Iterator[dict[Key, torch.Tensor]]:
    """Mask variables (all ones, requiring grad) multiplied into every present output projection's input.

    Yields:
        (layer, sublayer) -> mask of shape (present units,), units in the model's current column order.
    """
    adapter = adapter_for(model)
    dims = adapter.dims(model)
    masks: dict[Key, torch.Tensor] = {}
    handles = []

    def make_hook(mask: torch.Tensor, width: int) -> Any:
        def hook(_: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (args[0] * mask.repeat_interleave(width).to(args[0].dtype), *args[1:])

        return hook

    try:
        for layer in layers:
            for sublayer in SUBLAYERS:
                module = adapter.output_projection(model, layer, sublayer)
                if module is None:
                    continue
                width = _unit_width(dims, sublayer, ffn_group_size)
                columns = unwrap_linear_weight(module).shape[1]
                if columns % width:
                    raise ValueError(f"layer {layer} {sublayer}: {columns} input columns are not a multiple of {width}")
                device = next(module.parameters()).device
                mask = torch.ones(columns // width, device=device, requires_grad=True)
                masks[(layer, sublayer)] = mask
                handles.append(module.register_forward_pre_hook(make_hook(mask, width)))
        yield masks
    finally:
        for handle in handles:
            handle.remove()


def _samples(batch: Mapping[str, torch.Tensor], size: int) -> Iterator[dict[str, torch.Tensor]]:
    rows = len(next(iter(batch.values())))
    for begin in range(0, rows, size):
        yield {k: v[begin : begin + size] for k, v in batch.items()}


def fisher_importance(
    model: nn.Module,
    batches: Sequence[Mapping[str, torch.Tensor]],
    layers: Sequence[int] | None = None,
    ffn_group_size: int = 1,
    microbatch: int = 1,
    show_progress: bool = False,
) -> dict[Key, torch.Tensor]:
    """Diagonal empirical Fisher ``½ Σ_samples g²`` of the task loss w.r.t. every head / neuron-group mask.

    Args:
        model: an HF model with a task head; called with the batches' labels it returns ``.loss``.
        batches: labelled calibration batches (``calibration_batches(..., with_labels=True)``).
        layers: layers to score (default: all).
        ffn_group_size: neurons sharing one mask variable.
        microbatch: rows per gradient; 1 (default) gives Kwon et al.'s per-sample Fisher, larger is
            faster but squares gradients of micro-batch mean losses instead.

    Returns:
        (layer, sublayer) -> (present units,) float64 importances, in the model's current column order.

    Raises:
        ValueError: empty calibration set, or batches without labels (the model returns no loss).
    """
    if not batches:
        raise ValueError("the Fisher baseline needs at least one labelled calibration batch")
    if not any(k in LABEL_KEYS for k in batches[0]):
        raise ValueError(
            "the Fisher baseline needs labelled calibration batches (task loss gradients): "
            "draw them with calibration_batches(..., with_labels=True)"
        )
    if microbatch < 1:
        raise ValueError(f"microbatch must be >= 1, got {microbatch}")
    dims = adapter_for(model).dims(model)
    layers = list(range(dims.num_layers)) if layers is None else list(layers)
    was_training = model.training
    requires = [p.requires_grad for p in model.parameters()]
    model.eval()  # no dropout: gradients of the deployed function
    model.requires_grad_(False)  # only the masks need gradients
    device = next(model.parameters()).device
    try:
        with mask_hooks(model, layers, ffn_group_size) as masks, torch.enable_grad():
            keys = list(masks)
            importance = {k: torch.zeros(masks[k].shape, dtype=torch.float64) for k in keys}
            with Progress(disable=not show_progress, transient=True) as progress:
                bar = progress.add_task("Fisher gradients", total=len(batches))
                for batch in batches:
                    for sample in _samples(batch, microbatch):
                        loss = model(**{k: v.to(device) for k, v in sample.items()}).loss
                        grads = torch.autograd.grad(loss, [masks[k] for k in keys])
                        for key, grad in zip(keys, grads, strict=True):
                            importance[key] += 0.5 * grad.detach().double().cpu().pow(2)
                    progress.advance(bar)
    finally:
        for p, r in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(r)
        model.train(was_training)
    return importance


def unit_gram(weight: torch.Tensor, hessian: torch.Tensor, width: int) -> torch.Tensor:
    """Gram matrix of the units' output contributions, up to a constant: G_uv ∝ Σ_tokens ⟨A_u x, A_v x⟩.

    A_u = W[:, cols_u] applied to x[cols_u]; with H ∝ Σ x xᵀ, G_uv = Σ_{a∈u, b∈v} (WᵀW)_ab H_ab.

    Args:
        weight: (d_out, n·width) output-projection weight (nn.Linear layout).
        hessian: (n·width, n·width) input Hessian of the projection (any positive scale).
        width: columns per unit.
    """
    W = weight.double()
    n = W.shape[1] // width
    return ((W.T @ W) * hessian.double()).reshape(n, width, n, width).sum(dim=(1, 3))


def rescaled_masks(gram: torch.Tensor, kept: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """Kwon et al.'s mask tuning: scales m of the kept units that best reconstruct the full sublayer output.

    Solves min_m ‖Σ_{u∈kept} m_u A_u x − Σ_u A_u x‖² over the calibration tokens (the bias cancels):
    (G_KK + λI) m = G_K· 1 + λ1. The small ridge λ = ridge · mean diag(G_KK) pulls directions the data
    cannot determine (dead units) to m = 1, i.e. no change.

    Args:
        gram: (n, n) `unit_gram` of all present units.
        kept: (k,) positions of the kept units among them.

    Returns:
        (k,) float64 mask values.
    """
    G_kk = gram[kept][:, kept]
    lam = ridge * float(G_kk.diagonal().mean().clamp_min(1e-30))
    rhs = gram[kept].sum(dim=1) + lam
    return torch.linalg.solve(G_kk + lam * torch.eye(len(kept), dtype=G_kk.dtype), rhs)


def fisher_entries(
    weight: torch.Tensor,
    importance: torch.Tensor | None,
    kept_ids: tuple[int, ...],
    grid: Sequence[int],
    width: int,
    group: int,
    hessian: torch.Tensor | None = None,
) -> list[LevelEntry]:
    """Database entries of one sublayer: keep the most important units, error = importance removed.

    Args:
        weight: (d_out, present columns) output-projection weight; ``[:, :0]`` for a removed sublayer.
        importance: (present units,) Fisher importances (None for a removed sublayer).
        kept_ids: original ids (heads or neurons) present now, sorted.
        grid: level keys (dense-width counts of heads / neurons).
        width: input columns per mask unit (head_dim, or the FFN group size).
        group: ids per mask unit (1 for heads, the FFN group size for neurons).
        hessian: the projection's input Hessian: rescale the kept columns (`rescaled_masks`); None = keep.
    """
    total = float(importance.sum()) if importance is not None else 0.0
    removal = LevelEntry(keep=0, ids=torch.empty(0, dtype=torch.long), weight=weight[:, :0].float(), error=total)
    if not kept_ids or importance is None:
        return [removal]
    levels = sorted({k for k in grid if k <= len(kept_ids)} | {len(kept_ids)}, reverse=True)
    order = torch.sort(importance, descending=True, stable=True).indices
    gram = unit_gram(weight, hessian, width) if hessian is not None else None
    ids = torch.as_tensor(kept_ids, dtype=torch.long)
    entries = []
    for keep in (k for k in levels if k > 0):
        units = order[: keep // group].sort().values
        cols = (units[:, None] * width + torch.arange(width)).reshape(-1)
        kept_weight = weight[:, cols].double()
        if gram is not None and keep < len(kept_ids):
            kept_weight = kept_weight * rescaled_masks(gram, units).repeat_interleave(width)
        entries.append(
            LevelEntry(
                keep=keep,
                ids=ids[(units[:, None] * group + torch.arange(group)).reshape(-1)],
                weight=kept_weight.float(),
                error=max(total - float(importance[units].sum()), 0.0),
            )
        )
    return entries + ([removal] if 0 in levels else [])


def build_fisher_database(
    model: nn.Module,
    batches: Sequence[Mapping[str, torch.Tensor]],
    folder: str | Path,
    settings: DatabaseSettings,
    show_progress: bool = True,
    calibrate: Calibrate | None = None,
) -> LevelDatabase:
    """Build (or resume) a levels database whose levels follow Fisher importance (see the module docstring).

    Raises:
        ValueError: unknown Fisher method, empty or unlabelled calibration batches.
    """
    chosen = method(settings.method)
    check_calibration_mode(settings.calibration, settings.method)  # Fisher stays whole-model
    if chosen.selection != "fisher":
        fisher = [name for name in METHODS if method(name).selection == "fisher"]
        raise ValueError(f"{settings.method!r} is not a Fisher method; choose one of {tuple(fisher)}")
    if not batches:
        raise ValueError("the calibration set is empty: give at least one labelled batch")
    adapter = adapter_for(model)
    dims = adapter.dims(model)
    database, todo = open_database(model, batches, folder, settings)
    if not todo:
        return database
    fp = database.fingerprint
    started = time.perf_counter()
    importance = fisher_importance(model, batches, todo, settings.ffn_group_size, show_progress=show_progress)
    database.build_seconds["fisher"] = time.perf_counter() - started
    stats: dict[Key, ProjectionStats] = {}
    if chosen.mask_tuning:  # least-squares mask tuning needs the projections' input Hessians
        started = time.perf_counter()
        inputs = [{k: v for k, v in b.items() if k not in LABEL_KEYS} for b in batches]
        stats = capture(model, inputs, todo, show_progress=show_progress, calibrate=calibrate).stats
        database.build_seconds["calibration"] = time.perf_counter() - started
    structure = current_structure(model, dims)
    for layer in todo:
        entries: dict[str, list[LevelEntry]] = {}
        for sublayer in SUBLAYERS:
            module = adapter.output_projection(model, layer, sublayer)
            weight = torch.zeros(dims.hidden_size, 0) if module is None else unwrap_linear_weight(module)
            if sublayer == "attention":
                kept, grid, group = structure.layers[layer].heads, fp.head_levels, 1
            else:
                kept, grid, group = structure.layers[layer].neurons, fp.ffn_levels, settings.ffn_group_size
            projection = stats.get((layer, sublayer))
            entries[sublayer] = fisher_entries(
                weight,
                importance.get((layer, sublayer)),
                kept,
                grid,
                _unit_width(dims, sublayer, settings.ffn_group_size),
                group,
                projection.hessian.hessian() if projection is not None else None,
            )
        database.add_layer(layer, entries)
    return database
