"""Hitting a time budget: knapsack DP over pruning levels, and the SPDY coefficient search (spec §5).

The search runs over *units* (for a Transformer: each layer's attention and FFN separately, 2L units,
see `ziplm.core.latency`). Unit u offers options s = 0…S_u−1 (its pruning levels), each with an error
e_{u,s} ≥ 0 and a time t_{u,s} ≥ 0. A choice picks one option per unit.

- `dp_search` minimises Σ_u w_u·e_{u,s_u} subject to Σ_u t_{u,s_u} ≤ budget (times quantized upwards).
- `spdy_search` searches the weights w ∈ [0,1]^U so that the DP's choice minimises a *real* loss
  (the caller's task loss of the stitched model), since summed per-layer errors only approximate it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

PHASES = ("dp", "random", "local")
# Per-unit coefficients: a plain list from callers, an array inside SPDY.
Weights = Sequence[float] | npt.NDArray[np.float64]


class InfeasibleBudgetError(ValueError):
    """Even the cheapest option of every unit does not fit the (quantized) time budget."""


def _as_matrix(name: str, rows: Sequence[Sequence[float]]) -> list[npt.NDArray[np.float64]]:
    """Validate a ragged units × options table: at least one unit, one option each, finite, ≥ 0."""
    if len(rows) == 0:
        raise ValueError(f"{name} must list at least one unit")
    out = []
    for u, row in enumerate(rows):
        values = np.asarray(row, dtype=np.float64)
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"{name}[{u}] must be a non-empty 1-D list of options, got shape {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name}[{u}] holds non-finite values: {values.tolist()}")
        if np.any(values < 0):
            raise ValueError(f"{name}[{u}] holds negative values: {values.tolist()}")
        out.append(values)
    return out


class KnapsackProblem:
    """A validated, quantized multiple-choice knapsack instance, solvable for many weight vectors.

    Quantization: one bucket is budget / buckets seconds and every option's time is rounded UP to
    whole buckets, so any choice whose quantized total fits in `buckets` really fits in `budget`
    (the price is that choices within one bucket per unit of the limit may be missed).

    Args:
        errors: units × options errors e_{u,s} (ragged: units may have different option counts).
        times: units × options times t_{u,s} in the same layout.
        budget: the time limit for Σ_u t_{u,s_u} (> 0).
        buckets: resolution of the time axis.

    Raises:
        ValueError: mismatched shapes, empty/NaN/negative inputs, budget ≤ 0, buckets < 1.
    """

    def __init__(
        self,
        errors: Sequence[Sequence[float]],
        times: Sequence[Sequence[float]],
        budget: float,
        buckets: int = 10_000,
    ) -> None:
        self.errors = _as_matrix("errors", errors)
        self.times = _as_matrix("times", times)
        if len(self.errors) != len(self.times):
            raise ValueError(f"errors has {len(self.errors)} units but times has {len(self.times)}")
        for u, (e, t) in enumerate(zip(self.errors, self.times, strict=True)):
            if e.size != t.size:
                raise ValueError(f"unit {u}: {e.size} errors but {t.size} times")
        if not math.isfinite(budget) or budget <= 0:
            raise ValueError(f"budget must be a finite number > 0, got {budget!r}")
        if int(buckets) != buckets or buckets < 1:
            raise ValueError(f"buckets must be a positive integer, got {buckets!r}")
        self.budget = float(budget)
        self.buckets = int(buckets)
        # Costs above the whole budget can never be chosen; clipping to buckets + 1 keeps them
        # out of the DP while avoiding int overflow for absurd times.
        self.costs = [
            np.minimum(np.ceil(t * self.buckets / self.budget), self.buckets + 1).astype(np.int64) for t in self.times
        ]

    @property
    def num_units(self) -> int:
        return len(self.errors)

    def total_time(self, choice: Sequence[int]) -> float:
        """Σ_u t_{u,s_u}: the real (unquantized) time of a choice."""
        return float(sum(self.times[u][s] for u, s in enumerate(choice)))

    def objective(self, choice: Sequence[int], weights: Weights | None = None) -> float:
        """Σ_u w_u·e_{u,s_u} (w ≡ 1 when `weights` is None)."""
        w = np.ones(self.num_units) if weights is None else np.asarray(weights, dtype=np.float64)
        return float(sum(w[u] * self.errors[u][s] for u, s in enumerate(choice)))

    def _check_feasible(self) -> None:
        cheapest = sum(int(c.min()) for c in self.costs)
        if cheapest > self.buckets:
            real = sum(float(t.min()) for t in self.times)
            width = self.budget / self.buckets
            raise InfeasibleBudgetError(
                f"no choice fits the time budget of {self.budget:.6g} s: even the cheapest option of every "
                f"unit takes {real:.6g} s ({cheapest} of {self.buckets} buckets of {width:.3g} s after "
                "rounding each time up); raise the budget (lower the target) or use more buckets"
            )

    def _validated_weights(self, weights: Weights | None) -> npt.NDArray[np.float64]:
        if weights is None:
            return np.ones(self.num_units)
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (self.num_units,):
            raise ValueError(f"weights must have one entry per unit ({self.num_units}), got shape {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"weights must be finite and >= 0, got {w.tolist()}")
        return w

    def solve(self, weights: Weights | None = None) -> tuple[list[int], float]:
        """Minimise Σ_u w_u·e_{u,s_u} s.t. Σ_u quantized t_{u,s_u} ≤ buckets.

        Returns:
            (one option index per unit, the optimal objective value).

        Raises:
            InfeasibleBudgetError: even the cheapest choice exceeds the budget.
        """
        w = self._validated_weights(weights)
        self._check_feasible()
        size = self.buckets + 1
        # best[b] = min objective of the units so far with quantized total ≤ b. Starting from all zeros
        # makes `best` non-increasing in b, so the answer is best[buckets] and the backtrack starts there.
        best = np.zeros(size)
        argmins: list[npt.NDArray[np.int32]] = []
        for u in range(self.num_units):
            new = np.full(size, np.inf)
            arg = np.zeros(size, dtype=np.int32)
            for s, (cost, error) in enumerate(zip(self.costs[u], self.errors[u], strict=True)):
                if cost >= size:
                    continue
                candidate = best[: size - cost] + w[u] * error
                # Strict < keeps the lowest option index on ties: deterministic results.
                better = candidate < new[cost:]
                new[cost:][better] = candidate[better]
                arg[cost:][better] = s
            best = new
            argmins.append(arg)
        choice = [0] * self.num_units
        b = self.buckets
        for u in reversed(range(self.num_units)):
            choice[u] = int(argmins[u][b])
            b -= int(self.costs[u][choice[u]])
        return choice, float(best[self.buckets])


def dp_search(
    errors: Sequence[Sequence[float]],
    times: Sequence[Sequence[float]],
    budget: float,
    buckets: int = 10_000,
    weights: Weights | None = None,
) -> list[int]:
    """Pick one option per unit minimising Σ_u w_u·e_{u,s_u} with Σ_u t_{u,s_u} ≤ budget.

    Times are quantized into `buckets` buckets of budget/buckets seconds, rounded up, so the real
    total of the returned choice never exceeds the budget.

    Args:
        errors: units × options errors (ragged allowed; finite, ≥ 0).
        times: units × options times in seconds, same layout (finite, ≥ 0).
        budget: time limit in seconds (> 0), e.g. `LatencyModel.budget(target)`.
        buckets: time resolution of the DP (spec: 10,000).
        weights: per-unit coefficients w_u ≥ 0 (SPDY's α); None means all ones.

    Returns:
        The chosen option index of every unit.

    Raises:
        InfeasibleBudgetError: even the cheapest options exceed the budget.
        ValueError: malformed inputs.
    """
    return KnapsackProblem(errors, times, budget, buckets).solve(weights)[0]


@dataclass
class Candidate:
    """One evaluated SPDY candidate.

    Attributes:
        phase: "dp" (α ≡ 1 baseline), "random" (random start) or "local" (local-search step).
        step: index within its phase.
        alpha: the coefficient vector (one per unit).
        choice: the DP's option index per unit for this α.
        loss: the caller's loss of that choice.
        predicted_time: Σ_u t_{u,s_u} of the choice (the prunable part; compare with the budget).
        cache_hit: the choice had been evaluated before, so `loss_fn` was not called.
        accepted: the candidate strictly improved the best loss and became the incumbent.
        predicted_speedup: the speedup the latency model predicts for the choice (from `predicted_time`),
            when the search was given one (`spdy_search(speedup_of=...)`), else None.
    """

    phase: str
    step: int
    alpha: list[float]
    choice: list[int]
    loss: float
    predicted_time: float
    cache_hit: bool
    accepted: bool
    predicted_speedup: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON; a non-finite loss becomes None (strict JSON has no NaN/Infinity)."""
        out = asdict(self)
        out["loss"] = self.loss if math.isfinite(self.loss) else None
        return out


@dataclass
class SearchResult:
    """Outcome of `spdy_search`: the best choice found, the plain-DP baseline and the full log."""

    choice: list[int]
    loss: float
    alpha: list[float]
    baseline_choice: list[int]
    baseline_loss: float
    log: list[Candidate] = field(default_factory=list)

    @property
    def improvement(self) -> float:
        """Baseline loss minus best loss (≥ 0)."""
        return self.baseline_loss - self.loss

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (non-finite losses become None)."""

        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "choice": list(self.choice),
            "loss": finite(self.loss),
            "alpha": list(self.alpha),
            "baseline_choice": list(self.baseline_choice),
            "baseline_loss": finite(self.baseline_loss),
            "log": [c.to_dict() for c in self.log],
        }


class _Evaluator:
    """Scores α vectors: DP choice → cached loss → log entry, tracking the incumbent."""

    def __init__(
        self,
        problem: KnapsackProblem,
        loss_fn: Callable[[list[int]], float],
        total: int,
        progress: Callable[[int, int], None] | None,
        speedup_of: Callable[[float], float] | None = None,
    ) -> None:
        self.problem = problem
        self.speedup_of = speedup_of
        self.loss_fn = loss_fn
        self.total = total
        self.progress = progress
        self.cache: dict[tuple[int, ...], float] = {}
        self.log: list[Candidate] = []
        self.best: Candidate | None = None

    def evaluate(self, phase: str, step: int, alpha: npt.NDArray[np.float64]) -> bool:
        """Evaluate one α; return whether it became the new incumbent."""
        choice, _ = self.problem.solve(alpha)
        key = tuple(choice)
        hit = key in self.cache
        if not hit:
            loss = float(self.loss_fn(list(choice)))
            # A NaN loss must never win a comparison nor poison the incumbent: treat it as +inf.
            self.cache[key] = loss if not math.isnan(loss) else math.inf
        loss = self.cache[key]
        accepted = self.best is None or loss < self.best.loss
        predicted_time = self.problem.total_time(choice)
        candidate = Candidate(
            phase=phase,
            step=step,
            alpha=[float(a) for a in alpha],
            choice=list(choice),
            loss=loss,
            predicted_time=predicted_time,
            cache_hit=hit,
            accepted=accepted,
            predicted_speedup=None if self.speedup_of is None else float(self.speedup_of(predicted_time)),
        )
        self.log.append(candidate)
        if accepted:
            self.best = candidate
        if self.progress is not None:
            self.progress(len(self.log), self.total)
        return accepted


def _perturb(alpha: npt.NDArray[np.float64], prob: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Resample each coordinate with probability `prob` (at least one, else the step is wasted)."""
    mask = rng.random(alpha.size) < prob
    if not mask.any():
        mask[rng.integers(alpha.size)] = True
    new = alpha.copy()
    new[mask] = rng.random(int(mask.sum()))
    return new


def spdy_search(
    errors: Sequence[Sequence[float]],
    times: Sequence[Sequence[float]],
    budget: float,
    loss_fn: Callable[[list[int]], float],
    random_starts: int = 10,
    local_steps: int = 10,
    resample_prob: float = 0.1,
    seed: int = 0,
    buckets: int = 10_000,
    progress: Callable[[int, int], None] | None = None,
    speedup_of: Callable[[float], float] | None = None,
) -> SearchResult:
    """SPDY: search per-unit coefficients α ∈ [0,1]^U whose DP choice minimises `loss_fn` (spec §5).

    Order: α ≡ 1 (plain DP, the baseline), then `random_starts` uniform random α, then
    `local_steps` steps that perturb the incumbent α (each coordinate resampled with probability
    `resample_prob`) and keep strict improvements. Losses are cached per choice, so distinct α that
    lead to the same choice cost one `loss_fn` call.

    Args:
        errors: units × options errors, as for `dp_search`.
        times: units × options times in seconds, as for `dp_search`.
        budget: time limit for the units' total, in seconds.
        loss_fn: loss of a choice (one option index per unit), e.g. the calibration task loss of the
            stitched model. Lower is better.
        random_starts: number of random α (paper code: 10; SPDY: 100).
        local_steps: number of local-search steps.
        resample_prob: per-coordinate resampling probability in local search.
        seed: seed of the numpy Generator; the same seed gives the same log.
        buckets: DP time resolution.
        progress: called as progress(done, total) after every candidate.
        speedup_of: maps a choice's summed unit time to its predicted end-to-end speedup (for a latency
            model: T_base / (unprunable time + t)); every logged candidate then records its speedup.

    Returns:
        The best choice and loss, its α, the plain-DP baseline, and every candidate evaluated.

    Raises:
        InfeasibleBudgetError: no choice fits the budget.
        ValueError: malformed inputs or search settings.
    """
    if random_starts < 0 or local_steps < 0:
        raise ValueError(f"random_starts and local_steps must be >= 0, got {random_starts}, {local_steps}")
    if not 0 < resample_prob <= 1:
        raise ValueError(f"resample_prob must be in (0, 1], got {resample_prob!r}")
    problem = KnapsackProblem(errors, times, budget, buckets)
    rng = np.random.default_rng(seed)
    evaluator = _Evaluator(problem, loss_fn, 1 + random_starts + local_steps, progress, speedup_of)

    evaluator.evaluate("dp", 0, np.ones(problem.num_units))
    baseline = evaluator.log[0]
    for step in range(random_starts):
        evaluator.evaluate("random", step, rng.random(problem.num_units))
    for step in range(local_steps):
        assert evaluator.best is not None
        evaluator.evaluate("local", step, _perturb(np.asarray(evaluator.best.alpha), resample_prob, rng))

    best = evaluator.best
    assert best is not None
    return SearchResult(
        choice=list(best.choice),
        loss=best.loss,
        alpha=list(best.alpha),
        baseline_choice=list(baseline.choice),
        baseline_loss=baseline.loss,
        log=evaluator.log,
    )
