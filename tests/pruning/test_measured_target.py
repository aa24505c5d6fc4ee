"""The measured-speedup loop: search, build, time; search again at a corrected target when it misses."""

from __future__ import annotations

import random

import pytest

from ziplm.core.latency import LatencyModel, LatencyTable
from ziplm.pruning.targets import Choice, SearchSpace, meet_measured_target, search_target, target_status


def _fixed_bias(factor: float, max_speedup: float = 10.0, corrections: int = 2, tolerance: float = 0.03):
    """A 'machine' whose measured speedup is always `factor` × the searched one."""
    searched: list[float] = []

    def search_at(target: float) -> tuple[float, float]:
        searched.append(target)
        return target, target  # candidate = its own predicted speedup

    result = meet_measured_target(
        3.0, search_at, lambda predicted: factor * predicted, tolerance, corrections, max_speedup
    )
    return result, searched


def test_accurate_table_needs_one_search() -> None:
    (candidate, best, attempts), searched = _fixed_bias(1.0)
    assert searched == [3.0] and candidate == 3.0 and len(attempts) == 1 and best.measured == 3.0


def test_a_constant_bias_is_corrected_in_one_step() -> None:
    (candidate, best, attempts), searched = _fixed_bias(0.8)
    # First pick measured 2.4x; the table is 0.8x optimistic, so the next search aims at 3 / 0.8.
    assert searched == pytest.approx([3.0, 3.75])
    assert best.measured == pytest.approx(3.0) and candidate == pytest.approx(3.75)
    assert [a.measured for a in attempts] == pytest.approx([2.4, 3.0])


def test_a_pessimistic_table_is_corrected_downwards() -> None:
    (_, best, _), searched = _fixed_bias(1.25)
    assert searched == pytest.approx([3.0, 2.4]) and best.measured == pytest.approx(3.0)


def test_zero_corrections_is_the_open_loop_search() -> None:
    (_, best, attempts), searched = _fixed_bias(0.8, corrections=0)
    assert searched == [3.0] and len(attempts) == 1 and best.measured == pytest.approx(2.4)


def test_corrected_target_stays_below_the_tables_reach_and_stops_when_pinned() -> None:
    (_, best, attempts), searched = _fixed_bias(0.5, max_speedup=4.0, corrections=5)
    # 3 / 0.5 = 6 is beyond the 4x reach: clamp just below it, then stop (another search would repeat it).
    assert searched == pytest.approx([3.0, 4.0 * 0.995])
    assert len(attempts) == 2 and best.search_target == pytest.approx(3.98)


def _oscillating(tolerance: float, measured: list[float]):  # type: ignore[no-untyped-def]
    """A 2x target whose attempts measure `measured` in turn, whatever was searched (noise)."""
    times = iter(measured)
    return meet_measured_target(2.0, lambda t: (t, t), lambda _: next(times), tolerance, 2, 10.0)


def test_keeps_the_attempt_within_tolerance_when_noise_makes_it_oscillate() -> None:
    candidate, best, attempts = _oscillating(0.03, [1.70, 2.82, 1.98])
    assert len(attempts) == 3 and best is attempts[2] and candidate == best.search_target


def test_prefers_a_faster_attempt_to_a_closer_one_that_misses() -> None:
    """1.98x misses a 0.5% tolerance; 2.82x does not: a user who asked for 2x gets at least 2x."""
    _, best, attempts = _oscillating(0.005, [1.70, 2.82, 1.98])
    assert len(attempts) == 3 and best is attempts[1]


def test_keeps_the_fastest_when_every_attempt_misses() -> None:
    _, best, attempts = _oscillating(0.01, [1.60, 1.80, 1.70])
    assert best is attempts[1]


@pytest.mark.parametrize(
    ("measured", "status"),
    [(2.0, "on target"), (1.95, "on target"), (1.93, "missed"), (2.07, "faster than target"), (2.05, "on target")],
)
def test_a_miss_is_never_reported_as_a_hit(measured: float, status: str) -> None:
    assert target_status(measured, 2.0, 0.03) == status


def test_an_uncorrected_miss_is_reported_missed_through_the_search() -> None:
    """The open-loop pick of a machine 10% slower than its table: pick_measured says "missed", not a hit."""
    (_, best, _), _ = _fixed_bias(0.9, corrections=0)
    assert target_status(best.measured, 3.0, 0.03) == "missed"
    (_, best, _), _ = _fixed_bias(0.9, corrections=2)
    assert target_status(best.measured, 3.0, 0.03) == "on target"


@pytest.mark.parametrize(("tolerance", "corrections"), [(-0.01, 2), (0.03, -1)])
def test_bad_settings_are_refused(tolerance: float, corrections: int) -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        meet_measured_target(2.0, lambda t: (t, t), lambda c: c, tolerance, corrections, 10.0)


def test_loop_fixes_a_table_that_underprices_small_levels_for_a_real_dp() -> None:
    """A table that misses a per-block fixed cost of small levels (as a search exploits): the open-loop
    DP pick measures far slower than its target; the closed loop ends within the tolerance."""
    layers, heads, ffn = 6, list(range(13)), [0, 64, 128, 256, 384, 512, 768, 1024, 1536]
    table = LatencyTable(
        environment={"device": "test"},
        base_time=1.0,
        attention={h: 0.004 + 0.005 * h if h else 0.0 for h in heads},
        ffn={m: 0.004 + 0.00006 * m if m else 0.0 for m in ffn},
    )
    latency = LatencyModel(table, layers)
    rng = random.Random(0)
    per_layer = []
    for _ in range(layers):
        scale = rng.uniform(0.5, 2.0)
        per_layer.append(
            {
                # removing a whole sublayer costs 3x the error of its smallest kept level
                "attention": {h: scale * ((12 - h) ** 2 / 144 if h else 3.0) for h in heads},
                "ffn": {m: scale * (((1536 - m) / 1536) ** 2 if m else 3.0) for m in ffn},
            }
        )
    space = SearchSpace.build(per_layer, table)

    def true_time(choice: Choice) -> float:
        extra = sum(0.01 * (0 < h <= 6) + 0.01 * (0 < m <= 512) for h, m in choice)
        return latency.predict(choice) + extra

    def search_at(target: float) -> tuple[Choice, float]:
        choice, _ = search_target(space, latency, target)
        return choice, latency.speedup(choice)

    def measure(choice: Choice) -> float:
        return table.base_time / true_time(choice)

    target = 3.0
    open_loop, _, _ = meet_measured_target(target, search_at, measure, 0.03, 0, latency.max_speedup)
    assert measure(open_loop) / target - 1 < -0.05  # the uncorrected pick misses badly
    closed, best, attempts = meet_measured_target(target, search_at, measure, 0.03, 2, latency.max_speedup)
    assert len(attempts) >= 2 and abs(measure(closed) / target - 1) <= 0.03
    assert best.measured == pytest.approx(measure(closed))
