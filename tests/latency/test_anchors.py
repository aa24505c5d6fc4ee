"""In-situ sublayer times from whole-model anchors: straight lines or a least-squares curve through them."""

from __future__ import annotations

import random

import pytest

from tests.conftest import TINY_BERT
from ziplm.latency.anchors import anchor_levels, in_situ_times, interpolate_with_shape, smooth_anchors
from ziplm.models import adapter_for, build_model


def test_anchor_levels_span_the_grid() -> None:
    grid = [64, 58, 52, 47, 42, 38, 34, 31, 28, 0]
    anchors = anchor_levels(grid, 4)
    assert anchors[0] == 0 and anchors[-1] == 64 and 28 in anchors and len(anchors) == 5  # + smallest kept
    assert anchor_levels([4, 2, 0], 8) == [0, 2, 4]


def test_interpolation_is_exact_at_anchors_and_follows_the_shape() -> None:
    isolated = {0: 0.0, 1: 1.0, 2: 4.0, 3: 5.0, 4: 6.0}
    anchors = {0: 0.0, 2: 2.0, 4: 4.0}
    got = interpolate_with_shape(isolated, anchors)
    assert [got[k] for k in (0, 2, 4)] == [0.0, 2.0, 4.0]
    assert got[1] == pytest.approx(0.5)  # 1/4 of the way along the isolated curve from 0 to 2
    assert got[3] == pytest.approx(3.0)


def _quadratic(k: int) -> float:
    """A per-layer cost curve like MiniLM's FFN at batch 32: fixed cost + linear + mild convexity."""
    return 0.0 if k == 0 else 0.004 + 0.05 * k / 1536 + 0.02 * (k / 1536) ** 2


FFN_GRID = [1536, 1382, 1120, 907, 735, 536, 390, 256, 151, 89, 53, 31, 17, 0]


def test_smoothing_is_exact_on_a_smooth_curve_and_pinned_at_dense() -> None:
    anchors = {k: _quadratic(k) for k in anchor_levels(FFN_GRID, 7)}
    got = smooth_anchors(FFN_GRID, anchors)
    assert got[0] == 0.0 and got[1536] == pytest.approx(_quadratic(1536), rel=1e-9)
    assert all(got[k] == pytest.approx(_quadratic(k), rel=1e-9) for k in FFN_GRID)


def test_smoothing_averages_anchor_noise_that_interpolation_passes_through() -> None:
    """Anchors with independent noise (the dense one exact, as in the table): over many draws the fitted
    levels are much closer to the truth than straight lines through the anchors."""
    rng = random.Random(0)
    levels = anchor_levels(FFN_GRID, 7)
    smooth_err = line_err = 0.0
    for _ in range(200):
        noisy = {k: _quadratic(k) + (rng.gauss(0, 0.002) if 0 < k < 1536 else 0.0) for k in levels}
        smooth, lines = smooth_anchors(FFN_GRID, noisy), interpolate_with_shape({k: float(k) for k in FFN_GRID}, noisy)
        smooth_err += sum(abs(smooth[k] - _quadratic(k)) for k in FFN_GRID)
        line_err += sum(abs(lines[k] - _quadratic(k)) for k in FFN_GRID)
    assert smooth_err < 0.7 * line_err


def test_too_few_anchors_are_joined_by_straight_lines() -> None:
    anchors = {0: 0.0, 1: 1.0, 2: 1.5, 4: 4.0}  # three kept anchors: a quadratic would only interpolate
    assert smooth_anchors([0, 1, 2, 3, 4], anchors) == {0: 0.0, 1: 1.0, 2: 1.5, 3: 2.75, 4: 4.0}


def test_in_situ_times_recover_per_layer_costs_of_an_additive_machine() -> None:
    """With a fake timer that is exactly additive, anchors equal the per-layer costs."""
    model = build_model(TINY_BERT, "base")
    layers = adapter_for(model).dims(model).num_layers

    def fake_timer(models: list) -> list[float]:
        out = []
        for m in models:
            s = m.config.ziplm_structure["layers"]
            out.append(0.5 + sum(0.1 * len(la["heads"]) + 0.01 * len(la["neurons"]) for la in s))
        return out

    base, attention, ffn, probes, checks = in_situ_times(
        model, [4, 2, 0], [64, 32, 0], fake_timer, checks=[[(4, 0), (0, 32), (2, 64)]]
    )
    assert base == pytest.approx(0.5 + layers * (0.4 + 0.64))
    assert attention == pytest.approx({0: 0.0, 2: 0.2, 4: 0.4})
    assert ffn == pytest.approx({0: 0.0, 32: 0.32, 64: 0.64})
    assert len(probes) == 6
    assert checks == pytest.approx([0.5 + 0.4 + 0.32 + 0.2 + 0.64])  # timed in the same call


def test_anchors_are_shrunk_only_when_they_would_exceed_what_removal_saves() -> None:
    model = build_model(TINY_BERT, "base")

    def timer_with(total_removed: float):
        def fake(models: list) -> list[float]:
            out = []
            for m in models:
                s = m.config.ziplm_structure["layers"]
                cost = sum(0.1 * len(la["heads"]) + 0.01 * len(la["neurons"]) for la in s)
                out.append(total_removed if cost == 0 else 0.5 + cost)
            return out

        return fake

    # T(all removed) above the additive overhead: raw anchors would overshoot -> shrunk to fit exactly.
    base, attention, ffn, _, _ = in_situ_times(model, [4, 2, 0], [64, 32, 0], timer_with(1.0))
    assert 3 * (attention[4] + ffn[64]) == pytest.approx(base - 1.0)
    # T(all removed) below it (removal saves more than the sum): anchors stay as measured.
    _, attention, ffn, _, _ = in_situ_times(model, [4, 2, 0], [64, 32, 0], timer_with(0.1))
    assert attention[4] == pytest.approx(0.4) and ffn[64] == pytest.approx(0.64)


def test_check_choices_are_uneven_valid_and_seeded() -> None:
    from ziplm.latency.anchors import check_choices

    choices = check_choices(6, [4, 3, 2, 1], [64, 32, 16], count=3, seed=1)
    assert choices == check_choices(6, [4, 3, 2, 1], [64, 32, 16], count=3, seed=1)
    assert len(choices) == 3 and all(len(c) == 6 for c in choices)
    assert all(h in {0, 1, 2, 3, 4} and m in {0, 16, 32, 64} for c in choices for h, m in c)
    assert any(len(set(c)) > 1 for c in choices)
