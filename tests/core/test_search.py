"""Knapsack DP (exact vs brute force, budget safety) and SPDY coefficient search."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from ziplm.core.search import (
    InfeasibleBudgetError,
    KnapsackProblem,
    SearchResult,
    dp_search,
    spdy_search,
)


def _random_instance(
    rng: np.random.Generator, integer_times: bool
) -> tuple[list[list[float]], list[list[float]], list[float]]:
    units = int(rng.integers(1, 5))
    errors, times = [], []
    for _ in range(units):
        options = int(rng.integers(1, 6))
        errors.append(rng.random(options).tolist())
        if integer_times:
            times.append(rng.integers(0, 8, size=options).astype(float).tolist())
        else:
            times.append((rng.random(options) * 3).tolist())
    weights = rng.random(units).tolist()
    return errors, times, weights


def _brute_force(errors: list[list[float]], costs: list[list[float]], limit: float, weights: list[float]) -> float:
    """Minimum weighted error over all option combinations with Σ cost ≤ limit (inf if none)."""
    best = math.inf
    for combo in itertools.product(*(range(len(e)) for e in errors)):
        if sum(costs[u][s] for u, s in enumerate(combo)) <= limit:
            best = min(best, sum(weights[u] * errors[u][s] for u, s in enumerate(combo)))
    return best


@pytest.mark.parametrize("use_weights", [False, True])
def test_dp_is_exact_when_quantization_is_exact(use_weights: bool) -> None:
    # Integer times with one bucket per second: the quantized problem IS the real problem.
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(300):
        errors, times, weights = _random_instance(rng, integer_times=True)
        if not use_weights:
            weights = [1.0] * len(errors)
        budget = float(rng.integers(1, 20))
        optimum = _brute_force(errors, times, budget, weights)
        if math.isinf(optimum):
            with pytest.raises(InfeasibleBudgetError):
                dp_search(errors, times, budget, buckets=int(budget), weights=weights)
            continue
        problem = KnapsackProblem(errors, times, budget, buckets=int(budget))
        choice, value = problem.solve(weights)
        assert value == pytest.approx(optimum, abs=1e-12)
        assert problem.objective(choice, weights) == pytest.approx(value, abs=1e-12)
        assert problem.total_time(choice) <= budget
        assert dp_search(errors, times, budget, buckets=int(budget), weights=weights) == choice
        checked += 1
    assert checked > 150


def test_dp_matches_brute_force_on_quantized_costs_and_respects_real_budget() -> None:
    rng = np.random.default_rng(2)
    for _ in range(300):
        errors, times, weights = _random_instance(rng, integer_times=False)
        budget = float(rng.random() * 2 * len(errors) + 0.2)
        buckets = int(rng.integers(1, 50))
        costs = [np.ceil(np.asarray(t) * buckets / budget).tolist() for t in times]
        optimum = _brute_force(errors, costs, buckets, weights)
        if math.isinf(optimum):
            with pytest.raises(InfeasibleBudgetError):
                dp_search(errors, times, budget, buckets=buckets, weights=weights)
            continue
        problem = KnapsackProblem(errors, times, budget, buckets)
        choice, value = problem.solve(weights)
        assert value == pytest.approx(optimum, abs=1e-12)
        assert problem.objective(choice, weights) == pytest.approx(value, abs=1e-12)
        # Rounding up means the real total never exceeds the budget; and the quantized optimum can
        # only be worse than (or equal to) the unquantized one.
        assert problem.total_time(choice) <= budget * (1 + 1e-12)
        assert value >= _brute_force(errors, times, budget, weights) - 1e-12


def test_dp_with_default_buckets_on_a_layered_instance() -> None:
    rng = np.random.default_rng(3)
    units = 24
    times = [sorted(rng.random(13).tolist(), reverse=True) for _ in range(units)]
    errors = [sorted(rng.random(13).tolist()) for _ in range(units)]
    budget = 0.4 * sum(t[0] for t in times)
    choice = dp_search(errors, times, budget)
    assert len(choice) == units
    assert sum(times[u][s] for u, s in enumerate(choice)) <= budget


def test_dp_infeasible_budget_reports_numbers() -> None:
    with pytest.raises(InfeasibleBudgetError, match=r"budget of 1 s.*3 s"):
        dp_search([[0.0, 1.0], [0.0, 1.0]], [[2.0, 1.5], [3.0, 1.5]], budget=1.0)


@pytest.mark.parametrize(
    ("errors", "times", "budget", "kwargs", "message"),
    [
        ([], [], 1.0, {}, "at least one unit"),
        ([[0.1]], [[1.0], [1.0]], 1.0, {}, "units"),
        ([[0.1, 0.2]], [[1.0]], 1.0, {}, "unit 0"),
        ([[]], [[]], 1.0, {}, "non-empty"),
        ([[float("nan")]], [[1.0]], 1.0, {}, "non-finite"),
        ([[0.1]], [[float("inf")]], 1.0, {}, "non-finite"),
        ([[-0.1]], [[1.0]], 1.0, {}, "negative"),
        ([[0.1]], [[-1.0]], 1.0, {}, "negative"),
        ([[0.1]], [[1.0]], 0.0, {}, "budget"),
        ([[0.1]], [[1.0]], float("nan"), {}, "budget"),
        ([[0.1]], [[1.0]], 1.0, {"buckets": 0}, "buckets"),
        ([[0.1]], [[1.0]], 1.0, {"weights": [1.0, 1.0]}, "weights"),
        ([[0.1]], [[1.0]], 1.0, {"weights": [-1.0]}, "weights"),
        ([[0.1]], [[1.0]], 1.0, {"weights": [float("nan")]}, "weights"),
    ],
)
def test_dp_rejects_bad_inputs(
    errors: list[list[float]], times: list[list[float]], budget: float, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        dp_search(errors, times, budget, **kwargs)


def _two_of_four_instance() -> tuple[list[list[float]], list[list[float]], float]:
    # Four units, each kept (1 s, error 0) or removed (0 s, error e_u); the budget forces two removals.
    errors = [[0.0, 0.1], [0.0, 0.2], [0.0, 0.3], [0.0, 0.4]]
    times = [[1.0, 0.0]] * 4
    return errors, times, 2.0


def test_spdy_equals_plain_dp_when_the_loss_is_the_dp_objective() -> None:
    rng = np.random.default_rng(4)
    errors = [rng.random(6).tolist() for _ in range(6)]
    times = [sorted(rng.random(6).tolist(), reverse=True) for _ in range(6)]
    budget = 0.5 * sum(t[0] for t in times)
    problem = KnapsackProblem(errors, times, budget)

    result = spdy_search(errors, times, budget, problem.objective, random_starts=8, local_steps=8)

    assert result.choice == dp_search(errors, times, budget) == result.baseline_choice
    assert result.loss == result.baseline_loss
    assert all(c.loss >= result.baseline_loss - 1e-12 for c in result.log)


def test_spdy_beats_plain_dp_when_the_true_loss_disagrees_with_the_errors() -> None:
    errors, times, budget = _two_of_four_instance()
    true_weights = [10.0, 10.0, 1.0, 1.0]  # the errors underrate units 0 and 1 by 10×

    def true_loss(choice: list[int]) -> float:
        return sum(w * errors[u][s] for u, (w, s) in enumerate(zip(true_weights, choice, strict=True)))

    result = spdy_search(errors, times, budget, true_loss, random_starts=10, local_steps=10, seed=0)

    assert result.baseline_choice == [1, 1, 0, 0]  # plain DP removes the two "cheapest" units
    assert result.baseline_loss == pytest.approx(3.0)
    assert result.loss < result.baseline_loss
    assert result.loss == pytest.approx(0.7)  # the true optimum: remove units 2 and 3
    assert result.choice == [0, 0, 1, 1]
    assert result.improvement == pytest.approx(2.3)


def test_spdy_log_is_reproducible_budget_safe_cached_and_serialisable() -> None:
    rng = np.random.default_rng(5)
    errors = [rng.random(5).tolist() for _ in range(8)]
    times = [sorted(rng.random(5).tolist(), reverse=True) for _ in range(8)]
    budget = 0.5 * sum(t[0] for t in times)
    weights = rng.random(8) * 5
    calls: list[tuple[int, ...]] = []

    def loss(choice: list[int]) -> float:
        calls.append(tuple(choice))
        return float(sum(weights[u] * errors[u][s] for u, s in enumerate(choice)))

    progress: list[tuple[int, int]] = []
    first = spdy_search(
        errors,
        times,
        budget,
        loss,
        random_starts=12,
        local_steps=15,
        seed=7,
        progress=lambda done, total: progress.append((done, total)),
    )
    second = spdy_search(errors, times, budget, loss, random_starts=12, local_steps=15, seed=7)
    other = spdy_search(errors, times, budget, loss, random_starts=12, local_steps=15, seed=8)

    assert first.to_dict() == second.to_dict()
    assert first.to_dict() != other.to_dict()
    assert len(first.log) == 1 + 12 + 15
    assert [c.phase for c in first.log] == ["dp"] + ["random"] * 12 + ["local"] * 15
    assert progress == [(i, 28) for i in range(1, 29)]
    assert first.log[0].alpha == [1.0] * 8 and first.log[0].accepted

    for candidate in first.log:
        assert candidate.predicted_time == pytest.approx(sum(times[u][s] for u, s in enumerate(candidate.choice)))
        assert candidate.predicted_time <= budget * (1 + 1e-12)
        assert dp_search(errors, times, budget, weights=candidate.alpha) == candidate.choice

    # Cache: within one search, loss_fn runs once per distinct choice; repeats are logged as hits.
    first_run_calls = calls[: len({tuple(c.choice) for c in first.log})]
    assert len(first_run_calls) == len(set(first_run_calls))
    distinct = {tuple(c.choice) for c in first.log}
    assert sum(not c.cache_hit for c in first.log) == len(distinct)
    assert len(calls) == len(distinct) + len({tuple(c.choice) for c in second.log}) + len(
        {tuple(c.choice) for c in other.log}
    )

    # Accepted candidates strictly improve, and the result is the best of the log.
    accepted = [c.loss for c in first.log if c.accepted]
    assert accepted == sorted(accepted, reverse=True) and len(set(accepted)) == len(accepted)
    assert first.loss == min(c.loss for c in first.log) <= first.baseline_loss

    json.dumps(first.to_dict(), allow_nan=False)
    assert isinstance(first, SearchResult)


def test_spdy_logs_the_speedup_of_each_candidate_when_given_the_mapping() -> None:
    errors, times, budget = _two_of_four_instance()
    result = spdy_search(errors, times, budget, lambda c: float(sum(c)), speedup_of=lambda t: 10.0 / (2.0 + t))
    for candidate in result.log:
        assert candidate.predicted_speedup == pytest.approx(10.0 / (2.0 + candidate.predicted_time))
        assert candidate.to_dict()["predicted_speedup"] == candidate.predicted_speedup
    plain = spdy_search(errors, times, budget, lambda c: float(sum(c)))
    assert all(c.predicted_speedup is None for c in plain.log)


def test_spdy_local_steps_always_change_alpha() -> None:
    errors, times, budget = _two_of_four_instance()
    result = spdy_search(
        errors, times, budget, lambda c: float(sum(c)), random_starts=0, local_steps=20, resample_prob=1e-9
    )
    incumbent = result.log[0].alpha
    for candidate in result.log[1:]:
        assert candidate.alpha != incumbent
        if candidate.accepted:
            incumbent = candidate.alpha


def test_spdy_nan_loss_never_wins_and_serialises() -> None:
    errors, times, budget = _two_of_four_instance()
    result = spdy_search(errors, times, budget, lambda c: float("nan") if c == [1, 1, 0, 0] else 5.0)
    assert result.baseline_loss == math.inf
    assert result.loss == 5.0
    payload = result.to_dict()
    assert payload["baseline_loss"] is None
    json.dumps(payload, allow_nan=False)


def test_spdy_rejects_bad_settings() -> None:
    errors, times, budget = _two_of_four_instance()
    with pytest.raises(ValueError, match="resample_prob"):
        spdy_search(errors, times, budget, lambda c: 0.0, resample_prob=0.0)
    with pytest.raises(ValueError, match="random_starts"):
        spdy_search(errors, times, budget, lambda c: 0.0, random_starts=-1)
    with pytest.raises(InfeasibleBudgetError):
        spdy_search(errors, [[1.0, 0.5]] * 4, 1.0, lambda c: 0.0)
