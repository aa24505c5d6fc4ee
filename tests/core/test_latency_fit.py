"""The regression fit of per-level costs (`ziplm.core.latency_fit`) against fake machines whose true costs are
known: an exactly additive one, and one with a known layer-context effect (a cost per change of width
between neighbouring layers)."""

from __future__ import annotations

import random

import pytest

from ziplm.core.latency_fit import FittedCosts, fit_costs, interpolate, width_changes

LAYERS = 6
A_KNOTS = {0: 0.0, 2: 0.010, 6: 0.016, 12: 0.024}
F_KNOTS = {0: 0.0, 64: 0.008, 512: 0.020, 1536: 0.050}
HEADS, NEURONS = list(range(13)), [0, 64, 128, 256, 512, 1024, 1536]


def _machine(gamma_a: float = 0.0, gamma_f: float = 0.0, overhead: float = 0.03) -> FittedCosts:
    return FittedCosts(overhead, A_KNOTS, F_KNOTS, gamma_a, gamma_f, 0.0)


def _structures(count: int, seed: int = 0) -> list[list[tuple[int, int]]]:
    rng = random.Random(seed)
    uniform = [[(h, 1536)] * LAYERS for h in A_KNOTS] + [[(12, m)] * LAYERS for m in F_KNOTS]
    mixed = [[(rng.choice(HEADS), rng.choice(NEURONS)) for _ in range(LAYERS)] for _ in range(count)]
    return uniform + mixed


def _timed(machine: FittedCosts, structures: list[list[tuple[int, int]]], noise: float = 0.0, seed: int = 1):
    rng = random.Random(seed)
    return [(s, machine.predict(s) * (1 + rng.gauss(0, noise))) for s in structures]


def test_width_changes_counts_neighbouring_pairs() -> None:
    assert width_changes([(12, 1536)] * 4) == (0, 0)
    assert width_changes([(12, 1536), (4, 1536), (4, 64), (12, 64)]) == (2, 1)


def test_an_exactly_additive_machine_is_recovered() -> None:
    truth = _machine()
    fitted = fit_costs(_timed(truth, _structures(30)), list(A_KNOTS), list(F_KNOTS))
    assert fitted.overhead == pytest.approx(truth.overhead, rel=1e-6)
    for level, seconds in {**A_KNOTS}.items():
        assert fitted.attention[level] == pytest.approx(seconds, rel=1e-6, abs=1e-12)
    for level, seconds in F_KNOTS.items():
        assert fitted.ffn[level] == pytest.approx(seconds, rel=1e-6, abs=1e-12)
    assert fitted.context_attention == pytest.approx(0, abs=1e-9) and fitted.context_ffn == pytest.approx(0, abs=1e-9)
    assert fitted.residual < 1e-9
    # every level between knots, on the machine's own lines
    assert fitted.level_times([5, 9], "attention") == pytest.approx(
        {5: interpolate(A_KNOTS, 5), 9: interpolate(A_KNOTS, 9)}
    )


def test_a_known_layer_context_effect_is_recovered_and_predicts_mixtures() -> None:
    truth = _machine(gamma_a=0.002, gamma_f=0.006)
    fitted = fit_costs(_timed(truth, _structures(30)), list(A_KNOTS), list(F_KNOTS))
    assert fitted.context_attention == pytest.approx(0.002, rel=1e-6)
    assert fitted.context_ffn == pytest.approx(0.006, rel=1e-6)
    assert fitted.ffn[512] == pytest.approx(0.020, rel=1e-6)
    held_out = _structures(20, seed=7)[len(A_KNOTS) + len(F_KNOTS) :]
    for structure in held_out:
        assert fitted.predict(structure) == pytest.approx(truth.predict(structure), rel=1e-6)
    # the same data without a context term: mixed structures come out too fast (the search's bias)
    additive = fit_costs(_timed(truth, _structures(30)), list(A_KNOTS), list(F_KNOTS), context=False)
    errors = [additive.predict(s) / truth.predict(s) - 1 for s in held_out if width_changes(s) != (0, 0)]
    assert max(abs(e) for e in errors) > 0.02 and additive.residual > 0.01


def test_uniform_anchors_alone_cannot_see_the_context_effect() -> None:
    """Why the table times mixed structures: uniform models have no width changes, so γ stays at its prior."""
    truth = _machine(gamma_f=0.006)
    uniform = _structures(0)
    fitted = fit_costs(_timed(truth, uniform), list(A_KNOTS), list(F_KNOTS), prior=_machine(), ridge=1e-3)
    assert fitted.context_ffn == pytest.approx(0.0, abs=1e-6)


def test_noise_leaves_the_costs_close_and_monotone() -> None:
    truth = _machine(gamma_f=0.004)
    fitted = fit_costs(_timed(truth, _structures(60), noise=0.01), list(A_KNOTS), list(F_KNOTS), prior=truth)
    assert fitted.ffn[1536] == pytest.approx(0.050, rel=0.05)
    assert fitted.context_ffn == pytest.approx(0.004, rel=0.25)
    for knots in (fitted.attention, fitted.ffn):
        values = [knots[k] for k in sorted(knots)]
        assert values == sorted(values) and values[0] == 0.0


def test_bad_observations_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fit_costs([], [12], [1536])
    with pytest.raises(ValueError, match="must be positive"):
        fit_costs([([(12, 1536)], 0.0)], [12], [1536])
