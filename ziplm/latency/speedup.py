"""Measured speedups with a confidence interval, timed until the interval is tight.

A fixed number of interleaved rounds is too many on a quiet machine and too few on a busy one. Here
dense and members alternate round by round (drift hits both alike, as in `interleaved_samples`) and
timing stops once every member's ~95% confidence interval of the median per-round ratio is within
`ci` of it (or after `max_rounds`, or the environment's time cap). The interval is distribution-free
(order statistics of the per-round ratios), so one slow outlier round does not widen it much.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ziplm.latency.measure import Environment, model_timer, seconds_timer

MIN_ROUNDS = 5  # fewer rounds cannot bound a median at ~95% (the interval is then the whole range)


@dataclass(frozen=True)
class MeasuredSpeedup:
    """Dense time / member time: the median over rounds, and its ~95% interval."""

    speedup: float
    low: float
    high: float
    rounds: int

    @property
    def half_width(self) -> float:
        """Half the interval, relative to the speedup: the timing's own noise for this member."""
        return (self.high - self.low) / (2 * self.speedup)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "half_width": self.half_width}


def median_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float, float]:
    """(median, low, high): the order statistics n/2 ± z·√n/2 bound the median at ~95% (z = 1.96)."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("no values to take the median of")
    spread = z * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - spread))
    high = min(n - 1, math.ceil(n / 2 + spread) - 1)
    return statistics.median(ordered), ordered[low], ordered[high]


def speedup_from_ratios(ratios: Sequence[float]) -> MeasuredSpeedup:
    """Per-round member/dense time ratios -> speedup with its interval (inverted: slow rounds = low)."""
    median, low, high = median_interval(ratios)
    return MeasuredSpeedup(1.0 / median, 1.0 / high, 1.0 / low, len(ratios))


def timed_speedups(
    dense: nn.Module,
    members: Sequence[nn.Module],
    env: Environment,
    max_rounds: int,
    ci: float = 0.01,
    min_rounds: int = MIN_ROUNDS,
) -> list[MeasuredSpeedup]:
    """Each member's speedup over `dense`, interleaved round by round until every interval is within `ci`.

    Raises:
        ValueError: no members, ``max_rounds < 1`` or a non-positive `ci`.
    """
    if not members or max_rounds < 1 or not ci > 0:
        raise ValueError(f"timed_speedups needs members, max_rounds >= 1 and ci > 0 (got {max_rounds}, {ci})")
    env.validate()
    env.apply()
    timers = [seconds_timer(model_timer(m, env), env.device) for m in (dense, *members)]
    ratios: list[list[float]] = [[] for _ in members]
    cap = env.max_seconds_per_entry * len(timers) * 3
    with torch.inference_mode():
        for fn in timers:  # warm-up
            for _ in range(max(1, env.warmup)):
                fn()
        started = time.perf_counter()
        for done in range(1, max(max_rounds, 1) + 1):
            base, *times = [fn() for fn in timers]
            for sample, seconds in zip(ratios, times, strict=True):
                sample.append(seconds / base)
            if done < min(min_rounds, max_rounds):
                continue
            tight = all(speedup_from_ratios(r).half_width <= ci for r in ratios)
            if tight or time.perf_counter() - started > cap:
                break
    return [speedup_from_ratios(r) for r in ratios]


def noise_floor(dense: nn.Module, env: Environment, max_rounds: int, ci: float = 0.01) -> MeasuredSpeedup:
    """The dense model timed against an identical copy: how far from 1.00x this machine's timing strays.

    A member within this of its target cannot be told apart from one on it; the measured-speedup loop's
    tolerance must sit above it.
    """
    return timed_speedups(dense, [dense], env, max_rounds, ci)[0]
