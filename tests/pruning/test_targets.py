"""From database errors + latency table to per-layer sizes meeting a target."""

from __future__ import annotations

import pytest

from ziplm.core.latency import LatencyModel, LatencyTable, UnreachableTargetError
from ziplm.pruning.targets import SearchSpace, level_time, search_target

TABLE = LatencyTable(
    environment={"device": "test"},
    base_time=10.0,
    attention={4: 1.0, 2: 0.6, 0: 0.0},
    ffn={8: 3.0, 4: 1.6, 0: 0.0},
)
LAYERS = 2  # prunable part 2 * (1 + 3) = 8, overhead 2 -> max speedup 5x


def _errors(scale: float) -> dict[str, dict[int, float]]:
    return {"attention": {4: 0.0, 2: 0.1 * scale, 0: 1.0}, "ffn": {8: 0.0, 4: 0.2 * scale, 0: 1.0}}


def test_dp_choice_meets_target_and_prefers_insensitive_layer() -> None:
    space = SearchSpace.build([_errors(1.0), _errors(10.0)], TABLE)
    latency = LatencyModel(TABLE, LAYERS)
    choice, result = search_target(space, latency, target=1.5)
    assert result is None
    assert latency.speedup(choice) >= 1.5
    assert latency.predict(choice) - latency.overhead <= latency.budget(1.5)
    # The second layer is 10x more sensitive: the first one gives up more, strictly, in both sublayers. By
    # hand: budget 10/1.5 - 2 = 4.67 s; keeping layer 1 dense (4 s) leaves 0.67 s for layer 0: 2 heads (0.6 s)
    # and no FFN, error 0.1 + 1.0 = 1.1; every other fitting choice errs more (e.g. (4, 0), (4, 4): 3.0).
    assert choice[0][0] < choice[1][0] and choice[0][1] < choice[1][1]
    assert choice == [(2, 0), (4, 8)]


def test_spdy_uses_the_task_loss() -> None:
    space = SearchSpace.build([_errors(1.0), _errors(1.0)], TABLE)
    latency = LatencyModel(TABLE, LAYERS)

    # The true loss hates pruning layer 0's FFN, which the errors cannot know.
    def loss(choice: list[tuple[int, int]]) -> float:
        return 100.0 * (choice[0][1] < 8) + sum(8 - m for _, m in choice) + sum(4 - h for h, _ in choice)

    choice, result = search_target(space, latency, 1.6, loss_fn=loss, random_starts=8, local_steps=8)
    assert result is not None and choice[0][1] == 8
    assert latency.speedup(choice) >= 1.6
    # The plain DP (the SPDY baseline) prunes layer 0's FFN (equal errors, and it is the first unit on ties):
    # its loss pays the 100 penalty; SPDY's pick must be strictly better, and be the loss of its choice.
    assert search_target(space, latency, 1.6)[0][0][1] < 8
    assert result.baseline_loss >= 100.0 > result.loss == loss(choice)


def test_unreachable_target_names_the_maximum() -> None:
    space = SearchSpace.build([_errors(1.0), _errors(1.0)], TABLE)
    latency = LatencyModel(TABLE, LAYERS)
    assert latency.max_speedup == pytest.approx(5.0)
    with pytest.raises(UnreachableTargetError, match=r"5\.00×"):
        search_target(space, latency, target=6.0)
    # Exactly the maximum is unreachable too (it needs a zero time budget), just below it is not.
    with pytest.raises(UnreachableTargetError, match=r"5\.00×"):
        search_target(space, latency, target=5.0)
    choice, _ = search_target(space, latency, target=4.99)
    assert choice == [(0, 0), (0, 0)] and latency.speedup(choice) == pytest.approx(5.0)


def test_level_time_interpolates_between_measured_levels() -> None:
    assert level_time(TABLE.ffn, 6) == pytest.approx(2.3)
    assert level_time(TABLE.ffn, 1) == pytest.approx(0.4)  # between 0 (0 s) and 4 (1.6 s)
    # Measured levels are returned exactly, including both ends of the grid.
    assert (level_time(TABLE.ffn, 8), level_time(TABLE.ffn, 4), level_time(TABLE.ffn, 0)) == (3.0, 1.6, 0.0)
    for outside in (9, -1):
        with pytest.raises(KeyError, match="outside"):
            level_time(TABLE.ffn, outside)


def test_spdy_log_records_each_candidates_predicted_speedup() -> None:
    space = SearchSpace.build([_errors(1.0), _errors(3.0)], TABLE)
    latency = LatencyModel(TABLE, LAYERS)
    _, result = search_target(space, latency, 1.6, loss_fn=lambda c: float(sum(c[0])), random_starts=6, local_steps=6)
    assert result is not None
    log = result.to_dict()["log"]
    assert len(log) == 13
    for entry in log:
        assert entry["predicted_speedup"] == pytest.approx(latency.speedup(space.choice(entry["choice"])), rel=1e-12)
        assert entry["predicted_speedup"] >= 1.6 * (1 - 1e-9)  # every DP choice fits the target's budget
    assert len({e["predicted_speedup"] for e in log}) > 1  # the candidates differ, and so do their speedups
