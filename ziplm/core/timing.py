"""Robust timing of a callable: warm-up, adaptive repetitions, median, CUDA events on GPU.

CPU timing noise on small machines is large (max/min 1.2–1.4× between runs), so we report the
median of many repetitions and keep repeating until the median is stable or a time cap is hit.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Median seconds per call, with how it was obtained."""

    median: float
    repetitions: int
    spread: float  # (p75 - p25) / median of the timed repetitions

    def to_dict(self) -> dict[str, float]:
        return {"median": self.median, "repetitions": self.repetitions, "spread": self.spread}


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    if device.type == "cuda":

        def cuda_time(fn: Callable[[], object]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return float(start.elapsed_time(end)) / 1e3

        return cuda_time

    def cpu_time(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return cpu_time


def _spread(samples: list[float]) -> float:
    median = max(statistics.median(samples), 1e-12)
    if len(samples) < 4:  # too few for quartiles: use the full range (0 for one sample)
        return (max(samples) - min(samples)) / median
    q = statistics.quantiles(samples, n=4)
    return (q[2] - q[0]) / median


def measure(
    fn: Callable[[], object],
    device: torch.device | str = "cpu",
    warmup: int = 3,
    min_repetitions: int = 20,
    max_repetitions: int = 200,
    max_seconds: float = 10.0,
    target_spread: float = 0.05,
) -> Timing:
    """Time `fn` (already bound to its inputs) and return the median seconds per call.

    Repeats at least `min_repetitions` times, then until the interquartile spread falls below
    `target_spread`, `max_repetitions` is reached, or `max_seconds` of timing has elapsed.
    """
    if min_repetitions < 1 or max_repetitions < min_repetitions:
        raise ValueError(f"need 1 <= min_repetitions <= max_repetitions, got {min_repetitions}, {max_repetitions}")
    device = torch.device(device)
    timer = _timer(device)
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples: list[float] = []
        started = time.perf_counter()
        while len(samples) < max_repetitions:
            samples.append(timer(fn))
            enough = len(samples) >= max(min_repetitions, 4)
            if enough and (_spread(samples) <= target_spread or time.perf_counter() - started > max_seconds):
                break
    return Timing(statistics.median(samples), len(samples), _spread(samples))
