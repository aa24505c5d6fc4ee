"""Pareto fronts of metric vs measured speedup, and the plot of one model × task × hardware group."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI, servers and Hydra callbacks have no display
import matplotlib.pyplot as plt

MARKERS = ("o", "s", "^", "D", "v", "P", "<", ">", "h", "*")


def pareto_front(points: Sequence[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of the non-dominated points, by increasing speedup.

    A point (speedup, metric) is dominated when another is at least as fast *and* at least as good
    and strictly better in one of the two; identical points do not dominate each other (both stay).
    Sorting by speedup (fastest first) and sweeping once keeps this O(n log n).

    Args:
        points: (speedup, metric) pairs; NaN metrics never enter the front.
        higher_is_better: False for metrics such as perplexity.
    """
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(
        (i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))),
        key=lambda i: (-points[i][0], -sign * points[i][1]),
    )
    front: list[int] = []
    best = -math.inf
    for i in order:
        x, y = points[i][0], sign * points[i][1]
        if y > best:
            front.append(i)
            best = y
        elif y == best and front and (x, y) == (points[front[-1]][0], sign * points[front[-1]][1]):
            front.append(i)  # a duplicate of the last front point is not dominated by it
    return sorted(front, key=lambda i: (points[i][0], i))


@dataclass(frozen=True)
class Series:
    """One method's points in a group: members (and dense models) of every run with that method."""

    label: str
    points: list[tuple[float, float]]


@dataclass(frozen=True)
class ReferencePoint:
    """A published number: drawn as a distinct marker with its label, never joined to our fronts."""

    label: str
    speedup: float
    metric: float


def plot_pareto(
    series: Sequence[Series],
    references: Sequence[ReferencePoint],
    metric: str,
    higher_is_better: bool,
    title: str,
    path: Path,
    error_bars: Sequence[tuple[float, float, float, float]] = (),
) -> Path:
    """PNG: every point per method, its Pareto front as a line, published references as crosses; members run
    under several seeds as their mean with ±1 std bars (`error_bars`: x, x std, y, y std)."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for k, s in enumerate(series):
        color = f"C{k % 10}"
        xs, ys = [p[0] for p in s.points], [p[1] for p in s.points]
        ax.scatter(xs, ys, marker=MARKERS[k % len(MARKERS)], color=color, alpha=0.45, s=28)
        front = pareto_front(s.points, higher_is_better)
        ax.plot(
            [s.points[i][0] for i in front],
            [s.points[i][1] for i in front],
            marker=MARKERS[k % len(MARKERS)],
            color=color,
            label=f"{s.label} (Pareto front)",
        )
    if error_bars:
        x, xerr, y, yerr = (list(v) for v in zip(*error_bars, strict=True))
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="none", ecolor="0.3", capsize=3, label="mean ± std over seeds")
    for ref in references:
        ax.scatter([ref.speedup], [ref.metric], marker="X", s=90, color="black", zorder=4)
        ax.annotate(ref.label, (ref.speedup, ref.metric), textcoords="offset points", xytext=(5, 5), fontsize=7)
    if references:
        ax.scatter([], [], marker="X", s=90, color="black", label="quoted, other hardware")
    ax.margins(x=0.12, y=0.1)  # room for the reference labels
    ax.set_xlabel("measured speedup over dense (×)")
    ax.set_ylabel(f"{metric} ({'higher' if higher_is_better else 'lower'} is better)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")  # keeps labels that reach past the axes
    plt.close(fig)
    return path
