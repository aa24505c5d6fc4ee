"""The family's metric at a reference's speedup: Pareto front + linear interpolation, checked by hand."""

from __future__ import annotations

import pytest

from ziplm.report.gap import metric_at


def test_metric_at_interpolates_on_the_front_and_refuses_to_extrapolate() -> None:
    points = [(1.0, 90.0), (1.5, 88.0), (2.0, 89.0), (3.0, 80.0)]
    assert metric_at(points, 2.5) == pytest.approx(84.5)
    assert metric_at(points, 1.5) == pytest.approx(89.5)  # on the front between 1x and 2x, not the beaten member
    assert metric_at(points, 3.0) == 80.0 and metric_at(points, 1.0) == 90.0
    assert metric_at(points, 3.5) is None and metric_at(points, 0.5) is None and metric_at([], 2.0) is None
