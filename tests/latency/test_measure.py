"""Latency measurement on tiny models: complete tables, fingerprints, caching, refusals."""

from __future__ import annotations

import collections
import itertools
import json
import math
import random
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tests.conftest import TINY_BERT, TINY_GPT2
from ziplm.core.latency import LatencyTable, LatencyTableMismatchError
from ziplm.latency import cache as latency_cache
from ziplm.latency.measure import (
    Environment,
    environment_fingerprint,
    interleaved_medians,
    interleaved_samples,
    interleaved_speedups,
    measure_latency_table,
    monotone_times,
    relative_to_first,
)
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


def test_fingerprint_records_the_attention_kernel_and_transformers(tmp_path: Path) -> None:
    """sdpa and eager attention time differently: a table of one is never reused for the other."""
    import transformers

    sdpa = build_model(TINY_BERT, "base", attn_implementation="sdpa")
    eager = build_model(TINY_BERT, "base", attn_implementation="eager")
    fp_sdpa = environment_fingerprint(QUICK, sdpa, [4, 0], [64, 0])
    fp_eager = environment_fingerprint(QUICK, eager, [4, 0], [64, 0])
    assert fp_sdpa["attn_implementation"] == "sdpa" and fp_eager["attn_implementation"] == "eager"
    assert {k for k in fp_sdpa if fp_sdpa[k] != fp_eager[k]} == {"attn_implementation"}
    assert fp_sdpa["transformers"] == transformers.__version__
    assert latency_cache.cache_path(tmp_path, fp_sdpa) != latency_cache.cache_path(tmp_path, fp_eager)
    # A table whose fingerprint predates these keys no longer matches, and the message names them.
    old = {k: v for k, v in fp_sdpa.items() if k not in ("attn_implementation", "transformers")}
    LatencyTable(environment=old, base_time=1.0, attention={4: 0.1, 0: 0.0}, ffn={64: 0.2, 0: 0.0}).save(
        tmp_path / "old.json"
    )
    with pytest.raises(LatencyTableMismatchError, match=r"attn_implementation: table=<missing> run=.*sdpa") as err:
        LatencyTable.load(tmp_path / "old.json", expected_environment=fp_sdpa)
    assert "transformers: table=<missing>" in str(err.value)


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
    assert monotone_times({0: 0.0, 1: 1.0, 2: 2.0}) == {0: 0.0, 1: 1.0, 2: 2.0}
    fitted = monotone_times({0: 0.0, 10: 3.0, 20: 1.0, 30: 4.0})
    assert fitted == {0: 0.0, 10: 2.0, 20: 2.0, 30: 4.0}  # the inverted pair is pooled to its mean
    assert sum(fitted.values()) == pytest.approx(8.0)


def _isotonic_brute_force(values: list[float]) -> list[float]:
    """Least-squares non-decreasing fit by enumeration: the optimum is constant on contiguous blocks (each at
    its block's mean), so try every split into blocks whose means do not decrease and keep the best."""
    n, best, best_sse = len(values), None, math.inf
    for cuts in itertools.product([False, True], repeat=n - 1):
        bounds = [0, *[i + 1 for i, cut in enumerate(cuts) if cut], n]
        means = [statistics.fmean(values[a:b]) for a, b in itertools.pairwise(bounds)]
        if any(m2 < m1 for m1, m2 in itertools.pairwise(means)):
            continue
        fit = [m for (a, b), m in zip(itertools.pairwise(bounds), means, strict=True) for _ in range(b - a)]
        sse = sum((f - v) ** 2 for f, v in zip(fit, values, strict=True))
        if sse < best_sse:
            best, best_sse = fit, sse
    assert best is not None
    return best


def test_monotone_fit_is_the_least_squares_isotonic_fit() -> None:
    rng = random.Random(3)
    for trial in range(200):
        n = rng.randint(1, 7)
        keys = sorted(rng.sample(range(0, 100), n))
        values = [round(rng.uniform(0, 5), 1) if trial % 2 else rng.choice([1.0, 2.0, 3.0]) for _ in keys]
        rng.shuffle(keys)  # the fit orders by kept count, not by insertion order
        times = dict(zip(keys, values, strict=True))
        ordered = sorted(times)
        want = _isotonic_brute_force([times[k] for k in ordered])
        got = monotone_times(times)
        assert sorted(got) == ordered
        assert [got[k] for k in ordered] == pytest.approx(want, abs=1e-12), times


CALLS: collections.Counter[str] = collections.Counter()  # by sleeper name: the timed copy is not the original


class _Sleeper(nn.Module):
    """A "model" whose forward sleeps a fixed time: its speedup over another is known exactly."""

    def __init__(self, seconds: float, name: str = "") -> None:
        super().__init__()
        self.seconds, self.name = seconds, name
        self.config = SimpleNamespace(vocab_size=11)  # what `model_timer` reads to draw input ids

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        assert input_ids.shape == attention_mask.shape == (QUICK.batch_size, QUICK.seq_length)
        assert int(input_ids.max()) < 11
        CALLS[self.name] += 1
        time.sleep(self.seconds)
        return input_ids


def test_interleaved_timings_measure_known_speedups() -> None:
    """Sleeps of 60 ms (dense), 20 ms and 60 ms: speedups 3x and 1x, far apart against scheduling noise."""
    dense, fast, same = _Sleeper(0.06), _Sleeper(0.02), _Sleeper(0.06)
    env = Environment(batch_size=2, seq_length=8, warmup=1, max_seconds_per_entry=0.2)
    speedups = interleaved_speedups(dense, [fast, same], env, rounds=5)
    assert speedups[0] > 2 * speedups[1]  # ordered, by far
    assert speedups == pytest.approx([3.0, 1.0], rel=0.25)
    medians = interleaved_medians([fast, dense], env, rounds=5)
    assert medians == pytest.approx([0.02, 0.06], rel=0.25)
    assert medians[1] / medians[0] == pytest.approx(3.0, rel=0.25)
    with pytest.raises(ValueError, match="rounds"):
        interleaved_medians([dense], QUICK, rounds=0)


def test_interleaved_samples_are_per_round_and_stop_at_the_time_cap() -> None:
    CALLS.clear()
    models = [_Sleeper(0.001, "a"), _Sleeper(0.002, "b")]
    env = Environment(batch_size=2, seq_length=8, warmup=2, max_seconds_per_entry=0.0)  # cap spent at once
    samples = interleaved_samples(models, env, rounds=4, target_spread=0.0)  # never "settled"
    assert [len(s) for s in samples] == [4, 4] and CALLS == {"a": 2 + 4, "b": 2 + 4}
    assert all(t >= 0.001 for t in samples[0]) and all(t >= 0.002 for t in samples[1])
    env = Environment(batch_size=2, seq_length=8, warmup=1, max_seconds_per_entry=60.0)
    samples = interleaved_samples(models, env, rounds=2, target_spread=0.0)  # unsettled, time left: 3x rounds
    assert [len(s) for s in samples] == [6, 6]


# Two models over four rounds; by hand: model 0's median is (2 + 3) / 2 = 2.5 (its mean: 3); model 1's
# per-round ratios are 0.3, 0.9, 0.75, 0.8, median (0.75 + 0.8) / 2 = 0.775 (their mean: 0.6875; its ratio
# of medians would be 2.1 / 2.5 = 0.84).
SAMPLES = [[1.0, 2.0, 6.0, 3.0], [0.3, 1.8, 4.5, 2.4]]


def test_relative_to_first_is_the_median_of_per_round_ratios() -> None:
    assert relative_to_first(SAMPLES) == pytest.approx([1.0, 0.775])
    assert relative_to_first([[1.0, 2.0, 4.0], [0.3, 1.8, 3.0]]) == pytest.approx([1.0, 0.75])  # odd: the middle


def test_interleaved_medians_and_speedups_summarise_the_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    from ziplm.latency import measure

    def given(models: list, env: Environment, rounds: int, target_spread: float = 0.02) -> list[list[float]]:
        assert len(models) == len(SAMPLES) and rounds == 4
        return [list(s) for s in SAMPLES]

    monkeypatch.setattr(measure, "interleaved_samples", given)
    assert measure.interleaved_medians([_Sleeper(0), _Sleeper(0)], QUICK, rounds=4) == pytest.approx([2.5, 2.5 * 0.775])
    assert measure.interleaved_speedups(_Sleeper(0), [_Sleeper(0)], QUICK, rounds=4) == pytest.approx([1 / 0.775])


def test_relative_to_first_cancels_drift_shared_by_a_round() -> None:
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
    table = measure_latency_table(build_model(TINY_BERT, "base"), QUICK, [4, 3, 2, 1, 0], grid, False, mixed=0)
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
