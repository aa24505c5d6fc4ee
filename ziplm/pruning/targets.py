"""From per-level errors and a latency table to per-layer sizes that meet a speedup target.

The search runs over 2L *units* (attention and FFN of every layer, in that order). Each unit's
options are its database levels; their costs come from the latency table and their errors from the
database. The DP picks sizes under the time budget; SPDY reweights units by task loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ziplm.core.latency import LatencyModel, LatencyTable, level_time
from ziplm.core.search import SearchResult, dp_search, spdy_search
from ziplm.pruning.settings import SearchSettings  # re-exported (in __all__): its home is torch-free

Choice = list[tuple[int, int]]  # per layer: (kept heads, kept neurons)
T = TypeVar("T")
__all__ = ["Choice", "SearchSettings", "SearchSpace", "level_time", "meet_measured_target", "search_target"]


@dataclass(frozen=True)
class SearchSpace:
    """Options per unit (unit 2l = attention of layer l, 2l+1 = its FFN)."""

    levels: list[list[int]]
    errors: list[list[float]]
    times: list[list[float]]

    @classmethod
    def build(cls, layer_errors: Sequence[Mapping[str, Mapping[int, float]]], table: LatencyTable) -> SearchSpace:
        """`layer_errors[l][sublayer][keep]` = relative error (from the levels database)."""
        levels, errors, times = [], [], []
        for per_layer in layer_errors:
            for sublayer, table_times in (("attention", table.attention), ("ffn", table.ffn)):
                keeps = sorted(per_layer[sublayer], reverse=True)
                levels.append(keeps)
                errors.append([float(per_layer[sublayer][k]) for k in keeps])
                times.append([level_time(table_times, k) for k in keeps])
        return cls(levels, errors, times)

    def choice(self, option_indices: Sequence[int]) -> Choice:
        picked = [self.levels[u][i] for u, i in enumerate(option_indices)]
        return [(picked[2 * l], picked[2 * l + 1]) for l in range(len(picked) // 2)]


def search_target(
    space: SearchSpace,
    latency: LatencyModel,
    target: float,
    loss_fn: Callable[[Choice], float] | None = None,
    random_starts: int = 10,
    local_steps: int = 10,
    seed: int = 0,
) -> tuple[Choice, SearchResult | None]:
    """Per-layer sizes for `target` speedup: plain DP, or SPDY when a task `loss_fn` is given.

    SPDY's log records, for every candidate, its predicted time and the speedup `latency` predicts for it.

    Raises:
        UnreachableTargetError: the target exceeds what removing every prunable module can give.
    """
    budget = latency.budget(target)
    if loss_fn is None or (random_starts == 0 and local_steps == 0):
        return space.choice(dp_search(space.errors, space.times, budget)), None
    result = spdy_search(
        space.errors,
        space.times,
        budget,
        lambda indices: loss_fn(space.choice(indices)),
        random_starts=random_starts,
        local_steps=local_steps,
        seed=seed,
        speedup_of=lambda unit_time: latency.base_time / (latency.overhead + unit_time),
    )
    return space.choice(result.choice), result


@dataclass(frozen=True)
class Attempt:
    """One search at `search_target` whose result was built and timed against the dense model."""

    search_target: float
    predicted: float
    measured: float

    def deviation(self, target: float) -> float:
        return self.measured / target - 1

    def to_dict(self) -> dict[str, float]:
        return {"search_target": self.search_target, "predicted": self.predicted, "measured": self.measured}


def _next_search_target(target: float, attempts: Sequence[Attempt]) -> float:
    """Where to search next: the secant through the last two (search target, measured) points, or, with
    one point (or a flat/inverted secant, i.e. noise), the table's error factor on the last pick."""
    last = attempts[-1]
    if len(attempts) >= 2:
        prev = attempts[-2]
        slope = (last.measured - prev.measured) / (last.search_target - prev.search_target)
        if slope > 0.1:  # measured rises with the search target, as it must; else the points are noise
            return last.search_target + (target - last.measured) / slope
    return target * last.predicted / last.measured


# Keep a corrected search target this far below the table's maximum: the DP needs a positive budget.
_REACH_MARGIN = 0.995


def meet_measured_target(
    target: float,
    search_at: Callable[[float], tuple[T, float]],
    measure: Callable[[T], float],
    tolerance: float,
    max_corrections: int,
    max_speedup: float,
) -> tuple[T, Attempt, list[Attempt]]:
    """Search, build and time a candidate; while its *measured* speedup misses `target` by more than
    `tolerance`, search again at a target corrected by the miss; return the closest candidate.

    Why: the additive table predicts random structures within a few per cent, but a search picks the
    structures whose levels the table happens to price lowest, so its picks are biased towards being
    slower than predicted (MiniLM, batch 32: 3× members measured 2.43–2.69×). Assuming the table's
    error on nearby structures is the same factor, the second search aims at
    ``target × predicted / measured``; later ones follow the secant through the last two tries.

    Args:
        search_at: search target -> (candidate, its predicted speedup).
        measure: candidate -> measured speedup (dense and candidate timed interleaved).
        max_corrections: extra searches allowed after the first (0 = plain open-loop search).
        max_speedup: the table's reachable maximum; corrected targets stay below it.

    Returns:
        The kept candidate, its attempt, and every attempt. Kept: among the attempts at or above
        ``target × (1 − tolerance)`` the one closest to `target` (a faster member serves a user who asked
        for S; a slower one does not), else the fastest attempt.
    """
    if tolerance < 0 or max_corrections < 0:
        raise ValueError(f"speedup_tolerance ({tolerance}) and speedup_corrections ({max_corrections}) must be >= 0")
    candidates: list[T] = []
    attempts: list[Attempt] = []
    search_target = target
    for _ in range(max_corrections + 1):
        candidate, predicted = search_at(search_target)
        attempt = Attempt(search_target, predicted, measure(candidate))
        candidates.append(candidate)
        attempts.append(attempt)
        if abs(attempt.deviation(target)) <= tolerance or len(attempts) > max_corrections:
            break
        corrected = min(max(_next_search_target(target, attempts), 1.0), max_speedup * _REACH_MARGIN)
        if abs(corrected / search_target - 1) < 1e-3:
            break  # pinned at the table's reach (or at 1×): another search would repeat this one
        search_target = corrected
    fast_enough = [i for i, a in enumerate(attempts) if a.measured >= target * (1 - tolerance)]
    if fast_enough:
        best = min(fast_enough, key=lambda i: abs(attempts[i].deviation(target)))
    else:
        best = max(range(len(attempts)), key=lambda i: attempts[i].measured)
    return candidates[best], attempts[best], attempts


def target_status(measured: float, target: float, tolerance: float) -> str:
    """ "on target" within `tolerance`, "faster than target" above it, "missed" below it."""
    deviation = measured / target - 1
    if abs(deviation) <= tolerance:
        return "on target"
    return "faster than target" if deviation > 0 else "missed"
