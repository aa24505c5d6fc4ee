"""`measure_latency_table` fitted to mixed structures, end to end on a fake machine whose timings follow a known
formula with a layer-context cost, and `learn`: a cached table refitted with the members a run measured."""

from __future__ import annotations

import itertools

import pytest
from torch import nn

from tests.conftest import TINY_BERT
from ziplm.core.latency import LatencyModel
from ziplm.core.structure import Structure
from ziplm.latency import measure
from ziplm.latency.measure import Environment, learn, measure_latency_table
from ziplm.models import build_model

QUICK = Environment(batch_size=2, seq_length=8, warmup=1, repetitions=3, max_seconds_per_entry=0.5)
HEADS, FFN = [4, 3, 2, 1, 0], [64, 48, 32, 16, 8, 0]
GAMMA_F = 0.02  # seconds per change of FFN width between neighbouring layers


def _choice(model: nn.Module) -> list[tuple[int, int]]:
    structure = Structure.from_dict(model.config.ziplm_structure)
    return [(len(la.heads), len(la.neurons)) for la in structure.layers]


def _seconds(choice: list[tuple[int, int]], gamma_f: float = GAMMA_F) -> float:
    """Linear per-level costs (exactly representable on any knots) plus the context cost."""
    changes = sum(a[1] != b[1] for a, b in itertools.pairwise(choice))
    return 0.3 + sum(0.05 * h + (0.02 + 0.002 * m if m else 0.0) for h, m in choice) + gamma_f * changes


def _fake_machine(models: list, env: Environment, rounds: int, target_spread: float = 0.02) -> list[float]:
    return [_seconds(_choice(m)) for m in models]


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(measure, "interleaved_medians", _fake_machine)
    return measure_latency_table(build_model(TINY_BERT, "base"), QUICK, HEADS, FFN, False)


def test_the_fitted_table_finds_the_context_cost_and_predicts_held_out_mixtures(table) -> None:  # type: ignore[no-untyped-def]
    assert table.metadata["fit"] == "regression"
    assert table.metadata["context"]["ffn"] == pytest.approx(GAMMA_F, rel=0.01)  # the ridge pulls it a little
    assert table.metadata["fit_residual"] < 1e-3
    for check in table.metadata["self_check"]:  # held out of the fit
        assert check["predicted_speedup"] == pytest.approx(check["measured_speedup"], rel=1e-3)
    assert table.environment["latency_model"] == measure.LATENCY_MODEL


def test_anchors_alone_miss_what_the_fit_predicts(table, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(measure, "interleaved_medians", _fake_machine)
    anchors = measure_latency_table(build_model(TINY_BERT, "base"), QUICK, HEADS, FFN, False, mixed=0)
    assert "context" not in anchors.metadata and anchors.environment["latency_model"] == measure.ANCHOR_MODEL
    mixture = [(4, 8), (4, 64), (2, 16)]
    assert LatencyModel(anchors, 3).predict(mixture) < _seconds(mixture) * 0.97  # mixtures come out too fast
    assert LatencyModel(table, 3).predict(mixture) == pytest.approx(_seconds(mixture), rel=0.005)


def test_learning_from_measured_members_moves_predictions_towards_them(table) -> None:  # type: ignore[no-untyped-def]
    """Members whose smallest FFN level ran slower in the run than the table saw it: refitting with them
    brings the table's predictions for such structures closer to what was measured."""
    members = [[(4, 8), (2, 64), (4, 8)], [(1, 64), (4, 8), (3, 32)], [(2, 8), (2, 16), (4, 8)]]

    def in_run(choice: list[tuple[int, int]]) -> float:
        return _seconds(choice) + 0.05 * sum(m == 8 for _, m in choice)

    timed = [(m, table.base_time / in_run(m)) for m in members]
    model_before, learned = LatencyModel(table, 3), learn(table, timed)
    model_after = LatencyModel(learned, 3)
    before = [abs(model_before.speedup(m) / measured - 1) for m, measured in timed]
    after = [abs(model_after.speedup(m) / measured - 1) for m, measured in timed]
    assert sum(after) < 0.6 * sum(before), (before, after)
    assert learned.metadata["learned_members"] == 3 and learned.environment == table.environment
    assert len(learned.metadata["observations"]) == len(table.metadata["observations"]) + 3


def test_a_table_without_observations_is_not_refitted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(measure, "interleaved_medians", _fake_machine)
    anchors = measure_latency_table(build_model(TINY_BERT, "base"), QUICK, HEADS, FFN, False, mixed=0)
    assert learn(anchors, [([(4, 64)] * 2, 1.0)]) is anchors
