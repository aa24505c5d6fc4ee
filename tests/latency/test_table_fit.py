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


def _error(table, choice: list[tuple[int, int]]) -> float:  # type: ignore[no-untyped-def]
    return abs(LatencyModel(table, len(choice)).predict(choice) / _seconds(choice) - 1)


HELD_OUT = [[(4, 8), (4, 64), (2, 16)], [(1, 64), (3, 8), (4, 64)], [(2, 16), (4, 48), (4, 8)]]


def test_the_fitted_table_estimates_the_context_cost_and_stays_additive(table) -> None:  # type: ignore[no-untyped-def]
    assert table.metadata["fit"] == "regression" and table.environment["latency_model"] == measure.LATENCY_MODEL
    estimate = table.metadata["context_estimate"]
    assert estimate["ffn"] == pytest.approx(GAMMA_F, rel=0.01) and estimate["fit_residual"] < 1e-3
    assert "context" not in table.metadata  # planning stays additive: the DP's budget is exact
    choice = [(4, 8), (2, 64), (3, 16)]
    model = LatencyModel(table, 3)
    assert model.predict(choice) == pytest.approx(
        model.overhead + sum(model.attention_time(h) + model.ffn_time(m) for h, m in choice)
    )


def test_mixed_structures_make_the_additive_table_predict_mixtures_better(table, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(measure, "interleaved_medians", _fake_machine)
    anchors = measure_latency_table(build_model(TINY_BERT, "base"), QUICK, HEADS, FFN, False, mixed=0)
    assert "fit" not in anchors.metadata and anchors.environment["latency_model"] == measure.ANCHOR_MODEL
    fitted_error = sum(_error(table, c) for c in HELD_OUT)
    anchor_error = sum(_error(anchors, c) for c in HELD_OUT)
    assert fitted_error < 0.7 * anchor_error, (fitted_error, anchor_error)


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


def test_a_run_with_learn_table_refits_its_cached_table_and_one_without_does_not(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    common = ["run", "experiment=smoke", "search.targets=[1.5]", "search.speedup_corrections=0", "logger=none",
              f"output_root={tmp_path}", f"cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    for learning in ("false", "true"):
        cmd = [sys.executable, "-m", "ziplm", *common, f"search.learn_table={learning}"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        (path,) = (tmp_path / "cache" / "latency").glob("*.json")
        learned = json.loads(path.read_text())["metadata"].get("learned_members", 0)
        assert learned == (1 if learning == "true" else 0)
