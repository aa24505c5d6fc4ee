"""Baseline "solvers" with the OBS solver's interface: magnitude and random structure selection.

Which structure-selection methods exist, and which of them use these solvers, is
`ziplm.pruning.methods.REGISTRY`.

They choose which groups to drop without second-order information and do not update the remaining
weights; everything else (levels, errors, latency search, stitching) is shared with ZipLM, so a
comparison isolates what OBS contributes. ``loss`` is reported like OBS's (damped Hessian) so the
database's relative errors are computed the same way for every method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ziplm.core.obs import ObsLevel, ObsResult, prune_groups

Solver = Callable[[torch.Tensor, torch.Tensor, int, Sequence[int], float], ObsResult]


def _damped(H: torch.Tensor, damp: float) -> torch.Tensor:
    H = H.double().clone()
    diag = H.diagonal()
    diag[diag == 0] = 1.0
    diag += damp * diag.mean()
    return H


def _levels_from_order(
    W: torch.Tensor, H: torch.Tensor, group_size: int, keep_counts: Sequence[int], damp: float, order: list[int]
) -> ObsResult:
    """Remove groups in `order` (first = removed first), weights untouched."""
    n_groups = W.shape[1] // group_size
    Hd, W64 = _damped(H, damp), W.double()
    levels = []
    for keep in keep_counts:
        kept = torch.tensor(sorted(order[n_groups - keep :] if keep else []), dtype=torch.long)
        cols = (kept[:, None] * group_size + torch.arange(group_size)).reshape(-1)
        delta = W64.clone()
        delta[:, cols] = 0.0  # ΔW = W − Ŵ is W on the removed columns, 0 elsewhere
        loss = 0.5 * float(((delta @ Hd) * delta).sum())
        levels.append(ObsLevel(keep=keep, kept_groups=kept, weight=W[:, cols].clone(), loss=loss))
    return ObsResult(
        group_size=group_size,
        n_groups=n_groups,
        levels=levels,
        removal_order=torch.tensor(order, dtype=torch.long),
        removal_losses=torch.zeros(len(order), dtype=torch.float64),
        damp=damp,
    )


def magnitude_solver(
    W: torch.Tensor, H: torch.Tensor, group_size: int, keep_counts: Sequence[int], damp: float
) -> ObsResult:
    """Drop the groups whose output-projection columns have the smallest Frobenius norm first."""
    norms = W.double().reshape(W.shape[0], -1, group_size).pow(2).sum(dim=(0, 2))
    return _levels_from_order(W, H, group_size, keep_counts, damp, norms.argsort().tolist())


def random_solver(seed: int) -> Solver:
    """Drop groups in a random order drawn from `seed` (the same seed, the same order)."""

    def solve(W: torch.Tensor, H: torch.Tensor, group_size: int, keep_counts: Sequence[int], damp: float) -> ObsResult:
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(W.shape[1] // group_size, generator=gen).tolist()
        return _levels_from_order(W, H, group_size, keep_counts, damp, order)

    return solve


def obs_solver(W: torch.Tensor, H: torch.Tensor, group_size: int, keep_counts: Sequence[int], damp: float) -> ObsResult:
    """ZipLM's structured OBS (greedy removal with optimal weight updates)."""
    return prune_groups(W, H, group_size, keep_counts, damp=damp)
