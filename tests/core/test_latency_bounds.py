"""`LatencyModel.max_layer_preserving_speedup` against brute force over every choice."""

from __future__ import annotations

import itertools

import pytest

from ziplm.core.latency import LatencyModel, LatencyTable


@pytest.mark.parametrize("seed", range(4))
def test_layer_preserving_bound_equals_brute_force(seed: int) -> None:
    import random

    rng = random.Random(seed)
    heads, neurons = [0, 1, 2, 4], [0, 8, 16, 32]
    attention = {0: 0.0, **{h: 0.02 * h + rng.uniform(0, 0.03) for h in heads[1:]}}
    ffn = {0: 0.0, **{m: 0.003 * m + rng.uniform(0, 0.03) for m in neurons[1:]}}
    layers = 3
    table = LatencyTable(environment={}, base_time=1.0, attention=attention, ffn=ffn)
    latency = LatencyModel(table, layers)
    per_layer = [(h, m) for h in heads for m in neurons if h > 0 or m > 0]
    best = max(latency.speedup(list(c)) for c in itertools.product(per_layer, repeat=layers))
    assert latency.max_layer_preserving_speedup == pytest.approx(best)
    assert latency.max_layer_preserving_speedup < latency.max_speedup
