"""Structured Optimal Brain Surgeon (OBS) for one linear map: greedy group removal with weight updates.

Spec §2: drop groups of input columns of W (d_out, d_in) minimising ‖W X − Ŵ X‖², H = mean(2 x xᵀ). With
Hinv = H⁻¹ and B = Hinv[M, M], removing group M costs ρ_M / 2, ρ_M = tr(W[:, M] B⁻¹ W[:, M]ᵀ); the other
columns are compensated by W ← W − W[:, M] B⁻¹ Hinv[M, :], and Hinv ← Hinv − Hinv[:, M] B⁻¹ Hinv[M, :] is
the inverse of H restricted to the remaining columns. Groups are removed greedily, one at a time.

How it is made fast (the textbook loop rewrites all of ``Hinv`` and ``W`` every step: ~3.6 minutes for
one 3072-wide FC2 on two CPU cores; this solver takes a few seconds, see benchmarks/obs_solver_speed.py):

* **Scores without W.** ``ρ_M = tr(B⁻¹ P[M, M])`` with ``P = Wᵀ W``. One step changes ``Hinv`` by
  ``−Uᵀ U`` and ``P`` by ``−(Uᵀ Z + Zᵀ U)`` (U, Z: g × d_in), so scoring needs only the diagonal g × g
  blocks of ``Hinv`` and ``P``, kept up to date in O(d_in · g²) per step.
* **Lazy updates.** U, Z (and W's factor) are appended to buffers; per step only the rows of the removed
  group are formed (small matrix-vector products). Every ``rank_budget`` removed columns the pending
  updates are applied with one matrix-matrix product per matrix: BLAS-3 speed, not memory bound.
* **Compaction.** Removed columns are physically dropped once they are 10 % of the width, so the work
  shrinks as pruning proceeds.

Everything is float64: activation Hessians are badly conditioned, P's diagonal is kept by subtraction
(cancellation), and the dominant cost is matrix products, where float64 is only ~2× slower than float32.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ziplm.core.linalg import spd_inverse

__all__ = ["ObsLevel", "ObsResult", "group_columns", "prune_groups"]

_DEFAULT_RANK_BUDGET = 64  # columns of pending updates per flush; 64–128 measured best for d_in 3072
_COMPACT_FRACTION = 0.1  # drop removed columns physically once they are this share of the width


@dataclass(frozen=True)
class ObsLevel:
    """The pruned matrix at one level (a number of kept groups).

    Attributes:
        keep: Number of kept groups.
        kept_groups: (keep,) int64, sorted ids of the kept groups in the original numbering.
        weight: (d_out, keep · group_size) updated kept columns, in the order of ``kept_groups``; the
            removed columns are zero, so they are not stored.
        loss: Σ ρ/2 over the removed groups = increase of the per-token mean ``‖W x − Ŵ x‖²`` (summed over
            outputs), measured with the *damped* Hessian, i.e. ``½ tr(ΔW H_damped ΔWᵀ)``.
    """

    keep: int
    kept_groups: torch.Tensor
    weight: torch.Tensor
    loss: float


@dataclass(frozen=True)
class ObsResult:
    """Output of :func:`prune_groups`.

    Attributes:
        group_size: Columns per group.
        n_groups: Number of groups of the input (d_in / group_size).
        levels: One :class:`ObsLevel` per requested keep count, in the requested order (nested sets).
        removal_order: (n_removed,) int64, original ids of the removed groups in removal order.
        removal_losses: (n_removed,) float64, loss increase ρ/2 of each removal step.
        damp: The relative damping λ that was applied.
    """

    group_size: int
    n_groups: int
    levels: list[ObsLevel]
    removal_order: torch.Tensor
    removal_losses: torch.Tensor
    damp: float

    def level(self, keep: int) -> ObsLevel:
        """Returns the level with ``keep`` kept groups (KeyError if it was not requested)."""
        for lvl in self.levels:
            if lvl.keep == keep:
                return lvl
        raise KeyError(f"no level with keep={keep}; available: {[lvl.keep for lvl in self.levels]}")


def group_columns(groups: torch.Tensor, group_size: int) -> torch.Tensor:
    """Expands (n,) group ids into their (n · group_size,) column ids, group by group."""
    offsets = torch.arange(group_size, device=groups.device)
    return (groups.long()[:, None] * group_size + offsets).reshape(-1)


def _all_finite(x: torch.Tensor) -> bool:
    # A finite sum proves all entries finite; only an overflowing sum needs the slow elementwise check.
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def _as_count(c: object, n_groups: int) -> int:
    """A keep count as a Python int (numpy/torch integers accepted), or ValueError."""
    try:
        value = operator.index(c)  # type: ignore[arg-type]
    except TypeError:  # floats, strings, …
        value = -1
    if isinstance(c, bool) or not 0 <= value <= n_groups:
        raise ValueError(f"keep count {c!r} is not an int in [0, n_groups={n_groups}]")
    return value


def _validate(W: torch.Tensor, H: torch.Tensor, group_size: int, keep_counts: Sequence[int], damp: float) -> list[int]:
    """Checks the inputs of :func:`prune_groups`; returns the keep counts as a list of ints."""
    if W.dim() != 2:
        raise ValueError(f"W must be 2-D (d_out, d_in), got shape {tuple(W.shape)}")
    if H.dim() != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H must be a square 2-D matrix (d_in, d_in), got shape {tuple(H.shape)}")
    if H.shape[0] != W.shape[1]:
        raise ValueError(f"W and H mismatch: W has d_in={W.shape[1]} columns but H is {tuple(H.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if W.shape[1] % group_size != 0:
        raise ValueError(f"group_size={group_size} does not divide d_in={W.shape[1]}")
    if not (isinstance(damp, (int, float)) and math.isfinite(damp) and damp >= 0):
        raise ValueError(f"damp must be a finite number >= 0, got {damp!r}")
    if not _all_finite(W):
        raise ValueError("W contains NaN or Inf")
    if not _all_finite(H):
        raise ValueError("H contains NaN or Inf")
    n_groups = W.shape[1] // group_size
    counts = [_as_count(c, n_groups) for c in keep_counts]
    if not counts:
        raise ValueError("keep_counts is empty: give at least one number of groups to keep")
    if any(a <= b for a, b in itertools.pairwise(counts)):
        raise ValueError(f"keep_counts must be strictly decreasing, got {counts}")
    return counts


def _damped_inverse(W: torch.Tensor, H: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 copies after the dead-column fix and damping: W (d_out, d_in) and H⁻¹ (d_in, d_in)."""
    W64 = W.detach().to(torch.float64, copy=True)
    H64 = H.detach().to(device=W.device, dtype=torch.float64, copy=True)
    diag = H64.diagonal()
    # A column whose input is always zero has no curvature: give it a unit diagonal so H stays invertible
    # and zero its weight, since it never contributed to the output.
    dead = diag == 0
    diag[dead] = 1.0
    W64[:, dead] = 0.0
    # Damping relative to the mean curvature keeps H⁻¹ well conditioned (tokens ≪ d_in, collinear inputs).
    diag += damp * diag.mean()
    try:
        return W64, spd_inverse(H64)
    except ValueError:
        raise ValueError(
            f"H is not positive definite even after damping (damp={damp}); is it a Hessian of inputs "
            "(symmetric positive semi-definite)? Increasing damp may help."
        ) from None


def _carve(flat: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """A contiguous (rows, cols) view at the start of a reusable flat buffer."""
    return flat[: rows * cols].view(rows, cols)


class _LazyObsState:
    """Hinv, P = WᵀW and W of the current columns with pending low-rank updates (see module docstring):
    ``Hinv − Utᵀ Ut``, ``P − Utᵀ Zt − Ztᵀ Ut``, ``W − Atᵀ Ut``, with k pending rows in Ut, Zt (k, n) and
    At (k, d_out). Removed groups stay (masked by ``alive``) until enough justify a compaction.
    """

    def __init__(self, W: torch.Tensor, Hinv: torch.Tensor, group_size: int, rank_budget: int) -> None:
        n = W.shape[1]
        self.g = group_size
        self.capacity = max(rank_budget // group_size, 1) * group_size
        self.W, self.Hinv = W, Hinv
        self.P = W.T @ W
        # Reused flat buffers (fresh multi-MB tensors cost more in page faults than the copies into them):
        # compacted Hinv, compacted P, row-compacted scratch; pending rows of U and Z.
        self.spaces = [W.new_empty(n * n) for _ in range(3)]
        self.lowrank = [W.new_empty(self.capacity * n) for _ in range(2)]
        self.At = W.new_empty(self.capacity, W.shape[0])
        self.groups = torch.arange(n // group_size, device=W.device)
        self.alive = torch.ones(len(self.groups), dtype=torch.bool, device=W.device)
        self._restart()

    def _restart(self) -> None:
        """Starts an empty batch of pending updates on the current layout."""
        n = self.Hinv.shape[0]
        self.Ut, self.Zt = (_carve(flat, self.capacity, n) for flat in self.lowrank)
        self.k = 0
        # Diagonal g × g blocks of Hinv_cur and P_cur, one per group: (n_groups, g, g).
        self.Dh, self.Dp = self._diag_blocks(self.Hinv), self._diag_blocks(self.P)

    def _diag_blocks(self, M: torch.Tensor) -> torch.Tensor:
        ng, g = len(self.groups), self.g
        return M.reshape(ng, g, ng, g).diagonal(dim1=0, dim2=2).permute(2, 0, 1).clone()

    def scores(self) -> torch.Tensor:
        """(n_groups,) ρ = tr(Hinv[M, M]⁻¹ P[M, M]) per current group; +inf for removed groups."""
        if self.g == 1:
            rho = self.Dp[:, 0, 0] / self.Dh[:, 0, 0]
        else:
            eye = torch.eye(self.g, dtype=self.Dh.dtype, device=self.Dh.device)
            # Removed blocks are ~0 and would break the Cholesky; they are masked out below anyway.
            blocks = torch.where(self.alive[:, None, None], self.Dh, eye)
            chol, info = torch.linalg.cholesky_ex(blocks)
            if bool((info != 0).any()):
                raise FloatingPointError("a block of H⁻¹ lost positive definiteness; increase damp")
            rho = torch.cholesky_solve(self.Dp, chol).diagonal(dim1=1, dim2=2).sum(-1)
        return torch.where(self.alive, rho, torch.inf)

    def remove(self, i: int) -> float:
        """Removes group ``i`` (current numbering) with the OBS update; returns its loss increase ρ/2."""
        g, k = self.g, self.k
        cols = slice(i * g, (i + 1) * g)
        U, Z = self.Ut[:k], self.Zt[:k]
        hrow = self.Hinv[cols] - U[:, cols].T @ U  # (g, n) rows of Hinv_cur
        prow = self.P[cols] - U[:, cols].T @ Z - Z[:, cols].T @ U  # (g, n) rows of P_cur
        wcols = self.W[:, cols] - self.At[:k].T @ U[:, cols]  # (d_out, g) columns of W_cur
        # With B = Hinv[M, M] = L Lᵀ: u = L⁻¹ Hinv[M, :], p = L⁻¹ P[M, :], a = L⁻¹ W[:, M]ᵀ and
        # C = L⁻¹ P[M, M] L⁻ᵀ. Then Hinv −= uᵀu, W −= aᵀu and P −= uᵀp + pᵀu − uᵀCu = uᵀz + zᵀu with
        # z = p − ½ C u; the score is ρ = tr C.
        u, p, a, C = _whiten(hrow, prow, wcols, cols)
        z = p.sub_(C @ u, alpha=0.5)
        self.Ut[k : k + g] = u
        self.Zt[k : k + g] = z
        self.At[k : k + g] = a
        self.k = k + g
        self._update_diag_blocks(u, z)
        self.alive[i] = False
        return 0.5 * float(C.diagonal().sum())

    def buffers_full(self) -> bool:
        """Whether another group's updates would overflow the pending buffers (then :meth:`flush`)."""
        return self.k + self.g > self.capacity

    def _update_diag_blocks(self, u: torch.Tensor, z: torch.Tensor) -> None:
        ng, g = len(self.groups), self.g
        if g == 1:
            self.Dh[:, 0, 0].sub_(u[0] * u[0])
            self.Dp[:, 0, 0].sub_(u[0] * z[0], alpha=2.0)
            return
        ub = u.reshape(g, ng, g).transpose(0, 1)  # (n_groups, g, g): rows of u restricted to each group
        zb = z.reshape(g, ng, g).transpose(0, 1)
        self.Dh.baddbmm_(ub.transpose(1, 2), ub, alpha=-1.0)
        uz = torch.bmm(ub.transpose(1, 2), zb)
        self.Dp.sub_(uz).sub_(uz.transpose(1, 2))

    def kept_weight(self) -> torch.Tensor:
        """(d_out, n_alive · g) current weights of the alive columns, pending updates applied."""
        cols = group_columns(self.alive.nonzero().flatten(), self.g)
        k = self.k
        return torch.addmm(self.W[:, cols], self.At[:k].T, self.Ut[:k, cols], alpha=-1.0)

    def flush(self) -> None:
        """Applies the pending updates with matrix products; compacts once enough groups are gone."""
        k = self.k
        if k > 0:
            U, Z = self.Ut[:k], self.Zt[:k]
            self.Hinv.addmm_(U.T, U, alpha=-1.0)
            self.P.addmm_(U.T, Z, alpha=-1.0).addmm_(Z.T, U, alpha=-1.0)
            self.W.addmm_(self.At[:k].T, U, alpha=-1.0)
        n_dead = int((~self.alive).sum()) * self.g
        # Compaction copies both n × n matrices; it pays off once the dead columns are a sizeable share.
        if n_dead >= _COMPACT_FRACTION * self.Hinv.shape[0]:
            self._compact()
        self._restart()

    def _compact(self) -> None:
        cols = group_columns(self.alive.nonzero().flatten(), self.g)
        n, m = self.Hinv.shape[0], len(cols)
        for name in ("Hinv", "P"):
            rows = _carve(self.spaces[2], m, n)
            torch.index_select(getattr(self, name), 0, cols, out=rows)
            # The matrix's own storage is free again once its rows are copied out.
            own = self.spaces[0] if name == "Hinv" else self.spaces[1]
            setattr(self, name, torch.index_select(rows, 1, cols, out=_carve(own, m, m)))
        self.W = self.W.index_select(1, cols)
        self.groups = self.groups[self.alive]
        self.alive = self.alive[self.alive]


def _whiten(
    hrow: torch.Tensor, prow: torch.Tensor, wcols: torch.Tensor, cols: slice
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multiplies by L⁻¹ where B = hrow[:, cols] = L Lᵀ (a scalar square root for single columns).

    Returns:
        u = L⁻¹ hrow (g, n), p = L⁻¹ prow (g, n), a = L⁻¹ wcolsᵀ (g, d_out), C = L⁻¹ prow[:, cols] L⁻ᵀ (g, g).
    """
    if hrow.shape[0] == 1:
        b = float(hrow[0, cols.start])
        if not b > 0:
            raise FloatingPointError("a diagonal entry of H⁻¹ lost positivity; increase damp")
        inv_sqrt = 1.0 / math.sqrt(b)
        p = prow * inv_sqrt
        return hrow * inv_sqrt, p, wcols.T * inv_sqrt, p[:, cols] * inv_sqrt
    chol, info = torch.linalg.cholesky_ex(hrow[:, cols])
    if info.item() != 0:
        raise FloatingPointError("a block of H⁻¹ lost positive definiteness; increase damp")
    u = torch.linalg.solve_triangular(chol, hrow, upper=False)
    p = torch.linalg.solve_triangular(chol, prow, upper=False)
    a = torch.linalg.solve_triangular(chol, wcols.T.contiguous(), upper=False)
    C = torch.linalg.solve_triangular(chol, p[:, cols].T.contiguous(), upper=False)
    return u, p, a, C


@contextmanager
def _step_threads(device: torch.device) -> Iterator[None]:
    """One greedy step's small, latency-bound products run single-threaded on CPU: threads only add
    synchronisation there, which stalls whenever another process holds a core (12 s instead of 5.5 s per
    3072-wide FC2). Flushes keep the caller's thread count; the setting is restored after every step.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def prune_groups(
    W: torch.Tensor,
    H: torch.Tensor,
    group_size: int,
    keep_counts: Sequence[int],
    damp: float = 0.01,
    rank_budget: int = _DEFAULT_RANK_BUDGET,
) -> ObsResult:
    """Greedy structured OBS: removes groups of input columns one at a time, snapshotting each level.

    Groups are consecutive blocks of ``group_size`` input columns (a head = head_dim columns of the
    attention output projection; an FFN neuron = one FC2 column, or a group of g neurons). Dead columns
    (``H[j, j] == 0``) get ``H[j, j] = 1`` and ``W[:, j] = 0``; H is always damped by
    ``damp · mean(diag H) · I``. The reported losses are measured with this damped H. On CPU each greedy
    step runs with one torch thread (restored afterwards); the batched updates use the caller's setting.

    Args:
        W: (d_out, d_in) weight in ``nn.Linear`` layout (GPT-2 ``Conv1D`` weights must be transposed).
        H: (d_in, d_in) running mean of ``2 x xᵀ`` over the calibration tokens (float64 preferred).
        group_size: Columns per group; must divide d_in.
        keep_counts: Strictly decreasing numbers of groups to keep, each in [0, d_in / group_size].
        damp: Relative damping λ.
        rank_budget: Removed columns whose updates are batched into one matrix product (speed only).

    Returns:
        An :class:`ObsResult`; ``levels[i]`` belongs to ``keep_counts[i]``. Weights have W's dtype/device.

    Raises:
        ValueError: On malformed shapes, group size, keep counts, damping, non-finite inputs, or an H that
            is not positive definite after damping.
        FloatingPointError: If rounding destroys positive definiteness mid-way (not seen with damp > 0).
    """
    counts = _validate(W, H, group_size, keep_counts, damp)
    if rank_budget < 1:
        raise ValueError(f"rank_budget must be >= 1, got {rank_budget}")
    W64, Hinv = _damped_inverse(W, H, damp)
    state = _LazyObsState(W64, Hinv, group_size, rank_budget)
    n_groups = W.shape[1] // group_size
    wanted, snapshots = set(counts), dict[int, ObsLevel]()
    order, losses, total, n_alive = list[int](), list[float](), 0.0, n_groups
    while True:
        if n_alive in wanted:
            weight = state.kept_weight().to(dtype=W.dtype)
            snapshots[n_alive] = ObsLevel(n_alive, state.groups[state.alive], weight, total)
        if n_alive == counts[-1]:
            break
        with _step_threads(W.device):
            i = int(torch.argmin(state.scores()))
            order.append(int(state.groups[i]))
            losses.append(state.remove(i))
        if state.buffers_full():  # renumbers the groups when it compacts, so only between steps
            state.flush()
        total += losses[-1]
        n_alive -= 1
    return ObsResult(
        group_size=group_size,
        n_groups=n_groups,
        levels=[snapshots[c] for c in counts],
        removal_order=torch.tensor(order, dtype=torch.long),
        removal_losses=torch.tensor(losses, dtype=torch.float64),
        damp=float(damp),
    )
