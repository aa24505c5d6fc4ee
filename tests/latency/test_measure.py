"""Latency measurement on tiny models: complete tables, fingerprints, caching, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_BERT, TINY_GPT2
from ziplm.core.latency import LatencyTable, LatencyTableMismatchError
from ziplm.latency import cache as latency_cache
from ziplm.latency.measure import Environment, environment_fingerprint, measure_latency_table
from ziplm.models import build_model
from ziplm.models.build import ModelSpec

QUICK = Environment(batch_size=2, seq_length=8, warmup=1, repetitions=3, max_seconds_per_entry=0.5)


@pytest.mark.parametrize("spec", [TINY_BERT, TINY_GPT2])
def test_table_has_every_level_and_the_environment(spec: ModelSpec) -> None:
    model = build_model(spec, "base")
    table = measure_latency_table(model, QUICK, [4, 2, 0], [64, 32, 0], show_progress=False)
    assert sorted(table.attention) == [0, 2, 4] and sorted(table.ffn) == [0, 32, 64]
    assert all(t > 0 for t in [table.base_time, table.attention[4], table.ffn[64]])
    env = table.environment
    assert (env["batch_size"], env["seq_length"], env["dtype"], env["engine"]) == (2, 8, "float32", "eager")
    assert table.metadata["whole_model_probes"][0]["heads"] == 4
    assert env["dims"]["num_heads"] == 4 and env["head_levels"] == [4, 2, 0]
    assert env["threads"] == torch.get_num_threads() and env["device_name"]


def test_cache_reuses_and_refuses_other_environments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model(TINY_BERT, "base")
    table, path, cached = latency_cache.load_or_measure(model, QUICK, [4, 0], [64, 0], tmp_path, False)
    assert not cached and path.is_file()

    def must_not_measure(*_: object, **__: object) -> None:
        raise AssertionError("a cached table was measured again")

    monkeypatch.setattr(latency_cache, "measure_latency_table", must_not_measure)
    again, same_path, cached = latency_cache.load_or_measure(model, QUICK, [4, 0], [64, 0], tmp_path, False)
    assert cached and same_path == path and again.base_time == table.base_time
    # A table measured at another batch size must not be used for this run.
    other = Environment(batch_size=64, seq_length=8)
    with pytest.raises(LatencyTableMismatchError, match="batch_size: table=2 run=64"):
        LatencyTable.load(path, expected_environment=environment_fingerprint(other, model, [4, 0], [64, 0]))


def test_corrupt_cached_table_is_an_error(tmp_path: Path) -> None:
    model = build_model(TINY_BERT, "base")
    _, path, _ = latency_cache.load_or_measure(model, QUICK, [4, 0], [64, 0], tmp_path, False)
    data = json.loads(path.read_text())
    data["base_time"] = data["base_time"] * 2  # hand edit: checksum no longer matches
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="checksum"):
        latency_cache.load_or_measure(model, QUICK, [4, 0], [64, 0], tmp_path, False)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (Environment(dtype="float8"), "unknown dtype"),
        (Environment(engine="tensorrt"), "not supported"),
        (Environment(device="cuda"), "no CUDA device"),
        (Environment(batch_size=0), "batch_size"),
    ],
)
def test_bad_environments_are_refused(env: Environment, message: str) -> None:
    if env.device == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ValueError, match=message):
        measure_latency_table(build_model(TINY_BERT, "base"), env, [4, 0], [64, 0], show_progress=False)


def test_monotone_fit_pools_inversions_and_keeps_monotone_tables() -> None:
    from ziplm.latency.measure import monotone_times

    assert monotone_times({0: 0.0, 1: 1.0, 2: 2.0}) == {0: 0.0, 1: 1.0, 2: 2.0}
    fitted = monotone_times({0: 0.0, 10: 3.0, 20: 1.0, 30: 4.0})
    assert fitted == {0: 0.0, 10: 2.0, 20: 2.0, 30: 4.0}  # the inverted pair is pooled to its mean
    assert sum(fitted.values()) == pytest.approx(8.0)


def test_interleaved_medians_time_every_model() -> None:
    from ziplm.latency.measure import interleaved_medians, interleaved_speedups

    model = build_model(TINY_BERT, "base")
    medians = interleaved_medians([model, model], QUICK, rounds=4)
    assert len(medians) == 2 and all(m > 0 for m in medians)
    assert interleaved_speedups(model, [model], QUICK, rounds=4)[0] > 0
    with pytest.raises(ValueError, match="rounds"):
        interleaved_medians([model], QUICK, rounds=0)


def test_relative_to_first_cancels_drift_shared_by_a_round() -> None:
    from ziplm.latency.measure import relative_to_first

    drift = [1.0, 1.3, 0.8, 1.1, 0.9]  # the whole machine slows and speeds up between rounds
    samples = [[2.0 * d for d in drift], [1.0 * d for d in drift], [0.5 * d for d in drift]]
    assert relative_to_first(samples) == pytest.approx([1.0, 0.5, 0.25])
    # one outlier call of the reference moves a ratio of medians, not the median of ratios
    samples[0][2] = 9.0
    assert relative_to_first(samples)[1] == pytest.approx(0.5)


def test_self_check_of_an_additive_machine_predicts_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """With exactly additive fake timings, the table's check structures are predicted without error."""
    from ziplm.latency import measure

    def additive(models: list, env: Environment, rounds: int, target_spread: float = 0.02) -> list[float]:
        out = []
        for m in models:
            layers = m.config.ziplm_structure["layers"]
            out.append(0.3 + sum(0.1 * len(la["heads"]) + 0.002 * len(la["neurons"]) for la in layers))
        return out

    monkeypatch.setattr(measure, "interleaved_medians", additive)
    table = measure_latency_table(build_model(TINY_BERT, "base"), QUICK, [4, 3, 2, 1, 0], [64, 32, 0], False)
    checks = table.metadata["self_check"]
    assert len(checks) == measure.CHECKS
    for check in checks:
        assert len({tuple(layer) for layer in check["choice"]}) > 1 or len(check["choice"]) == 1
        assert check["predicted_speedup"] == pytest.approx(check["measured_speedup"], rel=1e-9)


def test_refit_draws_the_same_anchors_another_way(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine with a convex FFN cost: the table (straight lines between anchors) is exact at the anchors
    and above the curve between them; the quadratic refit of the same measurement is exact everywhere,
    also after a save/load."""
    from ziplm.latency import measure

    def convex(models: list, env: Environment, rounds: int, target_spread: float = 0.02) -> list[float]:
        return [
            0.3
            + sum(0.1 * len(la["heads"]) + 1e-4 * len(la["neurons"]) ** 2 for la in m.config.ziplm_structure["layers"])
            for m in models
        ]

    monkeypatch.setattr(measure, "interleaved_medians", convex)
    grid = [64, 56, 48, 40, 32, 24, 16, 8, 0]
    table = measure_latency_table(build_model(TINY_BERT, "base"), QUICK, [4, 3, 2, 1, 0], grid, False)
    anchors = {int(k) for k in table.metadata["anchors"]["ffn"]}
    between = [m for m in grid if m not in anchors]
    assert all(table.ffn[m] == pytest.approx(1e-4 * m**2, abs=1e-12) for m in anchors)
    assert between and all(table.ffn[m] > 1e-4 * m**2 + 1e-9 for m in between)  # chords lie above a convex curve
    table.save(tmp_path / "t.json")
    curve = measure.refit_table(LatencyTable.load(tmp_path / "t.json"), "quadratic")
    assert all(curve.ffn[m] == pytest.approx(1e-4 * m**2, abs=1e-12) for m in grid)
    assert measure.refit_table(table, "lines").ffn == pytest.approx(table.ffn)
    with pytest.raises(ValueError, match="unknown latency fit 'cubic'"):
        measure.refit_table(table, "cubic")
    old = LatencyTable(environment=table.environment, base_time=1.0, attention={1: 0.1, 0: 0.0}, ffn={1: 0.1, 0: 0.0})
    with pytest.raises(ValueError, match="re-measure"):
        measure.refit_table(old, "lines")
