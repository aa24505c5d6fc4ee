"""From per-level errors and a latency table to per-layer sizes that meet a speedup target.

The search runs over 2L *units* (attention and FFN of every layer, in that order). Each unit's
options are its database levels; their costs come from the latency table and their errors from the
database. The DP picks sizes under the time budget; SPDY reweights units by task loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ziplm.core.latency import LatencyModel, LatencyTable
from ziplm.core.search import SearchResult, dp_search, spdy_search

Choice = list[tuple[int, int]]  # per layer: (kept heads, kept neurons)


def level_time(times: Mapping[int, float], keep: int) -> float:
    """Table time of a level; linear interpolation for a size between measured levels."""
    if keep in times:
        return times[keep]
    below = max((k for k in times if k < keep), default=None)
    above = min((k for k in times if k > keep), default=None)
    if below is None or above is None:
        raise KeyError(f"kept count {keep} is outside the latency table's levels {sorted(times)}")
    w = (keep - below) / (above - below)
    return (1 - w) * times[below] + w * times[above]


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
    )
    return space.choice(result.choice), result
