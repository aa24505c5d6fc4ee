"""The family's metric at a reference's speedup: Pareto front + linear interpolation, checked by hand and
against brute force on random families."""

from __future__ import annotations

import random

import pytest

from ziplm.report.gap import metric_at, pareto_front


def test_front_drops_members_beaten_by_a_faster_better_one() -> None:
    points = [(1.0, 90.0), (1.5, 88.0), (2.0, 89.0), (3.0, 80.0)]
    assert pareto_front(points) == [(1.0, 90.0), (2.0, 89.0), (3.0, 80.0)]  # 1.5x is beaten by 2x
    assert pareto_front([(1.0, 20.0), (2.0, 25.0), (3.0, 24.0)], higher_is_better=False) == [(1.0, 20.0), (3.0, 24.0)]


def test_metric_at_interpolates_on_the_front_and_refuses_to_extrapolate() -> None:
    points = [(1.0, 90.0), (1.5, 88.0), (2.0, 89.0), (3.0, 80.0)]
    assert metric_at(points, 2.5) == pytest.approx(84.5)
    assert metric_at(points, 1.5) == pytest.approx(89.5)  # on the front between 1x and 2x, not the beaten member
    assert metric_at(points, 3.0) == 80.0 and metric_at(points, 1.0) == 90.0
    assert metric_at(points, 3.5) is None and metric_at(points, 0.5) is None and metric_at([], 2.0) is None


def test_front_matches_brute_force_on_random_families() -> None:
    rng = random.Random(0)
    for _ in range(200):
        points = [(round(rng.uniform(1, 5), 2), round(rng.uniform(50, 95), 1)) for _ in range(rng.randint(1, 8))]
        brute = sorted({p for p in points if not any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in points)})
        assert pareto_front(points) == brute
