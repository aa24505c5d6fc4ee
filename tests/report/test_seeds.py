"""A sweep over `seed` is reported as mean ± std per member (in sweep.md, and as error bars in the plot)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import pytest

from ziplm.report.seeds import across_seeds
from ziplm.report.sweep import collect_runs
from ziplm.report.sweep_render import write_sweep_report

MakeRun = Callable[..., Path]


@pytest.fixture
def seeded(tmp_path: Path, runs: MakeRun) -> Path:
    """Seeds 0-2 of one obs configuration, seed 0 of a random one (a single seed: no spread)."""
    sweep = tmp_path / "multirun" / "smoke" / "t"
    results = {0: ((1.40, 89.0), (1.9, 87.0)), 1: ((1.50, 88.0), (2.0, 86.0)), 2: ((1.45, 87.0), (2.1, 85.5))}
    for seed, (first, second) in results.items():
        runs(sweep / str(seed), members={1.5: first, 2.0: second}, seed=seed,
             overrides=["experiment=smoke", f"seed={seed}"])  # fmt: skip
    runs(
        sweep / "9", members={1.5: (1.3, 80.0)}, method="random", overrides=["experiment=smoke", "pruner.method=random"]
    )
    return tmp_path / "multirun"


def test_members_are_aggregated_over_seeds_only(seeded: Path) -> None:
    spreads = {(s.method, s.member): s for s in across_seeds(collect_runs(seeded).records)}
    assert set(spreads) == {("obs", "dense"), ("obs", "1.5x"), ("obs", "2x")}  # random ran one seed
    first = spreads[("obs", "1.5x")]
    assert first.seeds == 3 and first.overrides == ("experiment=smoke",)
    assert first.metric == pytest.approx((88.0, statistics.stdev([89.0, 88.0, 87.0])))
    assert first.measured == pytest.approx((1.45, statistics.stdev([1.40, 1.50, 1.45])))
    assert spreads[("obs", "dense")].metric == (90.0, 0.0)


def test_sweep_report_shows_the_spread(seeded: Path, tmp_path: Path) -> None:
    report = write_sweep_report(collect_runs(seeded), tmp_path / "report")
    md = report.markdown.read_text()
    assert "Across seeds (mean ± sample std" in md
    assert "| obs | oneshot | experiment=smoke | 1.5x | 3 | 1.45× ± 0.05 | 88.00 ± 1.00 |" in md
    assert report.plots and report.plots[0].stat().st_size > 5000
