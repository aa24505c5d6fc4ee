"""Across seeds: runs that differ only in ``seed`` are one configuration; each of its members (and its dense
model) is reported as mean ± standard deviation over the seeds, and drawn with error bars.

One seed says little on small tasks (a member's accuracy moves by a point between seeds on BBC News);
the paper comparison presets say how many seeds they need.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from ziplm.report.sweep import Record


@dataclass(frozen=True)
class SeedSpread:
    """One member of one configuration, over the seeds it was run with."""

    method: str
    schedule: str
    overrides: tuple[str, ...]  # the configuration's overrides, seed left out
    member: str
    seeds: int
    measured: tuple[float, float]  # (mean, std) of the measured speedup
    metric: tuple[float, float]  # (mean, std) of the task metric


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def across_seeds(records: Sequence[Record]) -> list[SeedSpread]:
    """Members measured under two or more seeds of the same configuration, as mean ± std (sample std)."""
    groups: dict[tuple[str, str, tuple[str, ...], str], list[Record]] = {}
    for r in records:
        if r.measured is None or r.metric is None or r.run.seed is None:
            continue
        config = tuple(o for o in r.run.overrides if not o.lstrip("+").startswith("seed="))
        groups.setdefault((r.method or r.run.method, r.run.schedule, config, r.member), []).append(r)
    spreads = []
    for (method, schedule, config, member), found in groups.items():
        if len({r.run.seed for r in found}) < 2:
            continue
        measured = _mean_std([float(r.measured) for r in found if r.measured is not None])
        metric = _mean_std([float(r.metric) for r in found if r.metric is not None])
        spreads.append(SeedSpread(method, schedule, config, member, len(found), measured, metric))
    return spreads
