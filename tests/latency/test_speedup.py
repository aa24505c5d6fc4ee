"""Measured speedups with a distribution-free interval (`ziplm.latency.speedup`): the order-statistics math on
known samples, and real timing of tiny models that stops when the interval is tight."""

from __future__ import annotations

import random
import statistics

import pytest
from torch import nn

from ziplm.latency.measure import Environment
from ziplm.latency.speedup import MIN_ROUNDS, median_interval, noise_floor, speedup_from_ratios, timed_speedups
from ziplm.models import build_model
from ziplm.models.build import ModelSpec

SPEC = dict(name="t", family="bert", source="scratch", vocab_size=100, max_position_embeddings=64)
ENV = Environment(batch_size=8, seq_length=32, warmup=1, repetitions=3, max_seconds_per_entry=5.0)


def test_median_interval_uses_the_order_statistics() -> None:
    values = list(range(1, 101))  # n = 100: ranks 50 ± 1.96·10/2 = 50 ± 9.8 -> [40, 60] (1-based 41st..60th)
    median, low, high = median_interval([float(v) for v in values])
    assert median == 50.5 and (low, high) == (41.0, 60.0)
    assert median_interval([3.0]) == (3.0, 3.0, 3.0)
    with pytest.raises(ValueError, match="no values"):
        median_interval([])


def test_the_interval_covers_the_true_median_about_95_percent_of_the_time() -> None:
    rng = random.Random(0)
    covered = 0
    for _ in range(400):
        sample = [rng.lognormvariate(0, 0.1) for _ in range(25)]  # true median 1.0
        _, low, high = median_interval(sample)
        covered += low <= 1.0 <= high
    assert 0.92 <= covered / 400 <= 0.995


def test_speedup_inverts_the_ratio_interval() -> None:
    ratios = [0.5, 0.52, 0.48, 0.5, 0.51, 0.49, 0.5]
    measured = speedup_from_ratios(ratios)
    assert measured.speedup == pytest.approx(1 / statistics.median(ratios))
    assert measured.low <= measured.speedup <= measured.high and measured.rounds == 7
    assert measured.half_width == pytest.approx((measured.high - measured.low) / (2 * measured.speedup))


def _bert(layers: int, width: int) -> nn.Module:
    spec = ModelSpec(**SPEC, hidden_size=width, num_layers=layers, num_heads=4, intermediate_size=4 * width)
    return build_model(spec, "base").eval()


def test_timing_stops_once_the_interval_is_tight_or_at_max_rounds() -> None:
    dense, small = _bert(4, 128), _bert(1, 128)
    loose = timed_speedups(dense, [small], ENV, max_rounds=40, ci=10.0)[0]  # any interval is tight enough
    assert loose.rounds == MIN_ROUNDS
    assert loose.speedup > 1.3  # a quarter of the layers: clearly faster, even on a busy machine
    capped = timed_speedups(dense, [small], ENV, max_rounds=6, ci=1e-6)[0]
    assert capped.rounds == 6


def test_noise_floor_of_a_model_against_itself_is_near_one() -> None:
    floor = noise_floor(_bert(2, 64), ENV, max_rounds=9)
    assert floor.low <= 1.0 <= floor.high or abs(floor.speedup - 1) < 0.1


@pytest.mark.parametrize(("members", "rounds", "ci"), [([], 5, 0.01), (["m"], 0, 0.01), (["m"], 5, 0.0)])
def test_bad_arguments_are_refused(members: list, rounds: int, ci: float) -> None:
    model = _bert(1, 32)
    with pytest.raises(ValueError, match="timed_speedups needs"):
        timed_speedups(model, [model for _ in members], ENV, rounds, ci)
