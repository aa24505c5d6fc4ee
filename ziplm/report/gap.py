"""The gap at a glance: a family's metric at a reference's speedup, read off the family's Pareto front
(`ziplm.report.pareto.pareto_front`: at each measured speedup, the best metric any member or the dense
model reaches at that speedup or faster). Between two front points the metric is interpolated linearly in
speedup; outside the measured range there is no answer (None): extrapolating a family is a guess.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from ziplm.report.pareto import pareto_front


def metric_at(points: Sequence[tuple[float, float]], speedup: float, higher_is_better: bool = True) -> float | None:
    """The front's metric at `speedup` (linear between front points), None outside the measured speedups."""
    front = [points[i] for i in pareto_front(points, higher_is_better)]
    if not front or not front[0][0] <= speedup <= front[-1][0]:
        return None
    for (s0, v0), (s1, v1) in itertools.pairwise(front):
        if s0 <= speedup <= s1:
            return v0 if s1 == s0 else v0 + (v1 - v0) * (speedup - s0) / (s1 - s0)
    return front[-1][1]  # speedup equals the only (or last) front point
