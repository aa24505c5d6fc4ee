"""Per-level sublayer costs fitted by regression over whole-model timings of *mixed* structures.

Uniform anchors (every layer at the same level) price each level as it costs when all layers share
it. A search picks extreme mixtures instead (FFN 89 of 1536 next to dense layers), and those measured
11–19% slower than such a table predicted (MiniLM, batch 32): a layer next to one of another width does
not run as it does next to its twin (buffers of other sizes, caches). So the table is fitted to what
mixed models take, with a *context* term for each change of width between neighbouring layers:

    T(s) = c + Σ_l A(h_l) + F(m_l) + γ_attn · #{l : h_l ≠ h_(l−1)} + γ_ffn · #{l : m_l ≠ m_(l−1)}

A and F are piecewise linear through knots (the anchor levels; A(0) = F(0) = 0: a removed sublayer is
the identity), so T is linear in (c, knots, γ) and every timed model — uniform anchors, random mixed
structures, members timed later — is one equation. A ridge term pulls each knot towards its prior (the
anchor estimate), which keeps knots that few observations touch where the anchors put them.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Choice = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class FittedCosts:
    """The fit: overhead, knot costs (seconds per layer), context costs (seconds per width change)."""

    overhead: float
    attention: dict[int, float]  # knot level -> seconds of one attention block (0 -> 0)
    ffn: dict[int, float]
    context_attention: float
    context_ffn: float
    residual: float  # relative RMS error of the fit on its observations

    def level_times(self, levels: Sequence[int], kind: str) -> dict[int, float]:
        """Every level's cost, on straight lines between the knots."""
        knots = self.attention if kind == "attention" else self.ffn
        return {level: interpolate(knots, level) for level in levels}

    def predict(self, choice: Choice) -> float:
        """Seconds of a whole model with per-layer ``(heads, neurons)``."""
        changes_a, changes_f = width_changes(choice)
        blocks = sum(interpolate(self.attention, h) + interpolate(self.ffn, m) for h, m in choice)
        return self.overhead + blocks + self.context_attention * changes_a + self.context_ffn * changes_f


def width_changes(choice: Choice) -> tuple[int, int]:
    """How many neighbouring layer pairs differ in kept heads, and in kept neurons."""
    pairs = list(itertools.pairwise(choice))
    return sum(a[0] != b[0] for a, b in pairs), sum(a[1] != b[1] for a, b in pairs)


def interpolate(knots: Mapping[int, float], level: int) -> float:
    """Piecewise-linear value at `level` through `knots` (constant beyond the ends)."""
    points = sorted(knots)
    if level in knots:
        return float(knots[level])
    index = bisect.bisect_left(points, level)
    if index == 0:
        return float(knots[points[0]])
    if index == len(points):
        return float(knots[points[-1]])
    lo, hi = points[index - 1], points[index]
    frac = (level - lo) / (hi - lo)
    return float(knots[lo] + frac * (knots[hi] - knots[lo]))


def _weights(points: Sequence[int], level: int) -> dict[int, float]:
    """Interpolation weights of `level` on the knots `points` (sorted)."""
    if level in points:
        return {level: 1.0}
    index = bisect.bisect_left(points, level)
    if index == 0 or index == len(points):
        return {points[min(index, len(points) - 1)]: 1.0}
    lo, hi = points[index - 1], points[index]
    frac = (level - lo) / (hi - lo)
    return {lo: 1.0 - frac, hi: frac}


def fit_costs(
    observations: Sequence[tuple[Choice, float]],
    attention_knots: Sequence[int],
    ffn_knots: Sequence[int],
    prior: FittedCosts | None = None,
    ridge: float = 1e-3,
    context: bool = True,
) -> FittedCosts:
    """Least-squares (c, A, F, γ) from whole-model timings ``(choice, seconds)``.

    Args:
        attention_knots, ffn_knots: levels where A and F are free (0 is always a knot fixed at 0 s).
        prior: knot values the ridge term pulls towards (e.g. the anchor estimates); None: no pull.
        ridge: weight of the pull, relative to the observations' scale (residuals are relative errors).
        context: fit γ (False: a purely additive model, γ = 0).

    Raises:
        ValueError: no observations, or a non-positive time.
    """
    if not observations:
        raise ValueError("fit_costs needs at least one timed structure")
    a_points = sorted({0, *attention_knots})
    f_points = sorted({0, *ffn_knots})
    a_free, f_free = [k for k in a_points if k > 0], [m for m in f_points if m > 0]
    columns = 1 + len(a_free) + len(f_free) + (2 if context else 0)
    rows, targets = [], []
    for choice, seconds in observations:
        if not seconds > 0:
            raise ValueError(f"a timed structure took {seconds!r} s; times must be positive")
        row = np.zeros(columns)
        row[0] = 1.0
        for heads, neurons in choice:
            for level, w in _weights(a_points, heads).items():
                if level > 0:
                    row[1 + a_free.index(level)] += w
            for level, w in _weights(f_points, neurons).items():
                if level > 0:
                    row[1 + len(a_free) + f_free.index(level)] += w
        if context:
            row[-2:] = width_changes(choice)
        rows.append(row / seconds)  # relative errors: a 1 ms miss on a 10 ms model counts as much as 10 on 100
        targets.append(1.0)
    design, y = np.array(rows), np.array(targets)
    if prior is not None and ridge > 0:
        scale = float(np.median([s for _, s in observations]))
        values = [prior.overhead, *(prior.attention.get(k, interpolate(prior.attention, k)) for k in a_free)]
        values += [prior.ffn.get(m, interpolate(prior.ffn, m)) for m in f_free]
        values += [prior.context_attention, prior.context_ffn] if context else []
        for j, value in enumerate(values):
            row = np.zeros(columns)
            row[j] = np.sqrt(ridge) / scale
            design = np.vstack([design, row])
            y = np.append(y, np.sqrt(ridge) * value / scale)
    theta, *_ = np.linalg.lstsq(design, y, rcond=None)
    overhead = float(theta[0])
    attention = _monotone({0: 0.0, **{k: float(v) for k, v in zip(a_free, theta[1 : 1 + len(a_free)], strict=True)}})
    ffn_values = theta[1 + len(a_free) : 1 + len(a_free) + len(f_free)]
    ffn = _monotone({0: 0.0, **{m: float(v) for m, v in zip(f_free, ffn_values, strict=True)}})
    gamma_a, gamma_f = (max(float(theta[-2]), 0.0), max(float(theta[-1]), 0.0)) if context else (0.0, 0.0)
    fitted = FittedCosts(overhead, attention, ffn, gamma_a, gamma_f, 0.0)
    errors = [fitted.predict(c) / s - 1 for c, s in observations]
    return FittedCosts(overhead, attention, ffn, gamma_a, gamma_f, float(np.sqrt(np.mean(np.square(errors)))))


def monotone_times(times: Mapping[int, float]) -> dict[int, float]:
    """Least-squares non-decreasing fit of time vs kept count (pool-adjacent-violators).

    Keeping more heads or neurons never makes a block faster; a measured or fitted inversion is noise,
    and left in a table it would let the DP buy "free" capacity.
    """
    keys = sorted(times)
    blocks: list[list[float]] = []  # [sum, count] of pooled runs, in increasing-key order
    for k in keys:
        blocks.append([times[k], 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    fitted: list[float] = []
    for total, count in blocks:
        fitted += [total / count] * int(count)
    return dict(zip(keys, fitted, strict=True))


def _monotone(knots: dict[int, float]) -> dict[int, float]:
    """Fitted knots made non-decreasing and never negative, a removed sublayer free."""
    out = monotone_times({k: max(v, 0.0) for k, v in knots.items()})
    out[0] = 0.0
    return out
