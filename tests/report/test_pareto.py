"""Pareto fronts against the brute-force definition, and the plot file."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from ziplm.report.pareto import ReferencePoint, Series, pareto_front, plot_pareto


def brute_force_front(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """The definition: i is dominated iff some j is >= in both coordinates and > in one."""
    sign = 1 if higher_is_better else -1

    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        ax, ay, bx, by = a[0], sign * a[1], b[0], sign * b[1]
        return ax >= bx and ay >= by and (ax > bx or ay > by)

    valid = [i for i, p in enumerate(points) if not any(math.isnan(v) for v in p)]
    front = [i for i in valid if not any(dominates(points[j], points[i]) for j in valid if j != i)]
    return sorted(front, key=lambda i: (points[i][0], i))


@pytest.mark.parametrize("higher_is_better", [True, False])
@pytest.mark.parametrize("seed", range(40))
def test_front_matches_brute_force_with_ties(seed: int, higher_is_better: bool) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 25)
    # A coarse grid forces equal speedups, equal metrics and exact duplicates.
    points = [(float(rng.randint(1, 6)), float(rng.randint(0, 5))) for _ in range(n)]
    if seed % 5 == 0:
        points.append((float("nan"), 1.0))
        points.append((2.0, float("nan")))
    assert pareto_front(points, higher_is_better) == brute_force_front(points, higher_is_better)


def test_front_by_hand() -> None:
    points = [(1.0, 90.0), (2.0, 89.0), (2.0, 85.0), (3.0, 89.0), (1.5, 80.0), (3.0, 89.0), (4.0, 70.0)]
    # (2, 89) is beaten by (3, 89); the duplicates (3, 89) both stay; (4, 70) is fastest.
    assert pareto_front(points) == [0, 3, 5, 6]
    # Perplexity: lower is better, so (4, 70) dominates everything slower with a higher value.
    assert pareto_front(points, higher_is_better=False) == [6]
    assert pareto_front([]) == []


def test_plot_writes_a_png(tmp_path: Path) -> None:
    series = [Series("obs", [(1.0, 90.0), (1.5, 89.0), (2.0, 85.0)]), Series("random", [(1.0, 90.0), (1.6, 70.0)])]
    refs = [ReferencePoint("CoFi (Xia et al. 2022, v100-b128)", 2.0, 89.1)]
    path = plot_pareto(series, refs, "accuracy", True, "title", tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
