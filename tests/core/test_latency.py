"""Latency table file format (checksum, environment fingerprint) and the additive latency model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ziplm.core.latency import (
    CorruptLatencyTableError,
    LatencyModel,
    LatencyTable,
    LatencyTableMismatchError,
    UnreachableTargetError,
    _checksum,
)

ENV: dict[str, Any] = {
    "device": "cpu",
    "threads": 2,
    "dtype": "float32",
    "batch_size": 4,
    "seq_len": 128,
    "engine": "torch",
    "head_levels": [4, 2, 0],
}


def _table(**overrides: Any) -> LatencyTable:
    # 2 layers: dense blocks 2 × (3 + 5) = 16 ms of T_base = 20 ms → 4 ms unprunable overhead.
    fields: dict[str, Any] = {
        "environment": dict(ENV),
        "base_time": 0.020,
        "attention": {4: 0.003, 2: 0.002, 0: 0.0},
        "ffn": {8: 0.005, 4: 0.003, 0: 0.0},
        "metadata": {"repetitions": 50, "spread": {"attention": {"4": 0.01}}},
    }
    fields.update(overrides)
    return LatencyTable(**fields)


def test_predict_speedup_and_budget_arithmetic() -> None:
    model = LatencyModel(_table(), num_layers=2)
    assert model.dense_heads == 4 and model.dense_neurons == 8
    assert model.prunable_time == pytest.approx(0.016)
    assert model.overhead == pytest.approx(0.004)
    assert model.max_speedup == pytest.approx(5.0)  # T_base / overhead when removed blocks cost 0

    dense = [(4, 8), (4, 8)]
    assert model.predict(dense) == pytest.approx(0.020)
    assert model.speedup(dense) == pytest.approx(1.0)
    half = [(2, 4), (0, 8)]
    assert model.predict(half) == pytest.approx(0.004 + 0.002 + 0.003 + 0.0 + 0.005)
    assert model.speedup(half) == pytest.approx(0.020 / 0.014)
    assert model.predict([(0, 0), (0, 0)]) == pytest.approx(0.004)

    assert model.budget(1.0) == pytest.approx(0.016)
    assert model.budget(2.0) == pytest.approx(0.006)
    assert model.unit_times([[4, 0], [2]], [[8], [4, 0]]) == [[0.003, 0.0], [0.005], [0.002], [0.003, 0.0]]


def test_max_speedup_counts_the_cheapest_level_time() -> None:
    # A removed block that still costs something lowers the reachable maximum below T_base / overhead.
    model = LatencyModel(_table(attention={4: 0.003, 0: 0.0005}, ffn={8: 0.005, 0: 0.0005}), num_layers=2)
    assert model.max_speedup == pytest.approx(0.020 / (0.004 + 2 * 0.001))
    with pytest.raises(UnreachableTargetError):
        model.budget(4.0)


@pytest.mark.parametrize("target", [5.0, 7.5, float("inf")])
def test_unreachable_target_names_the_maximum(target: float) -> None:
    model = LatencyModel(_table(), num_layers=2)
    with pytest.raises(UnreachableTargetError, match=r"maximum reachable speedup .* is 5\.00×"):
        model.budget(target)


@pytest.mark.parametrize("target", [0.5, 0.0, -2.0, float("nan")])
def test_target_below_one_or_not_finite_is_refused(target: float) -> None:
    with pytest.raises(UnreachableTargetError, match=r"5\.00×"):
        LatencyModel(_table(), num_layers=2).budget(target)


def test_model_rejects_unknown_levels_and_wrong_lengths() -> None:
    model = LatencyModel(_table(), num_layers=2)
    with pytest.raises(ValueError, match=r"3 kept heads.*\[0, 2, 4\]"):
        model.predict([(3, 8), (4, 8)])
    with pytest.raises(ValueError, match=r"FFN timing for 7"):
        model.predict([(4, 7), (4, 8)])
    with pytest.raises(ValueError, match="1 layers"):
        model.predict([(4, 8)])
    with pytest.raises(ValueError, match="layers"):
        model.unit_times([[4]], [[8]])
    with pytest.raises(ValueError, match="num_layers"):
        LatencyModel(_table(), num_layers=0)


def test_inconsistent_table_is_refused() -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        LatencyModel(_table(base_time=0.016), num_layers=2)


@pytest.mark.parametrize(
    "overrides",
    [
        {"base_time": 0.0},
        {"base_time": float("nan")},
        {"attention": {}},
        {"attention": {4: 0.003, 2: 0.0}},  # only a removed block may cost 0
        {"ffn": {8: float("inf")}},
        {"ffn": {8: -1.0}},
        {"ffn": {-1: 0.001}},
    ],
)
def test_table_rejects_invalid_times(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _table(**overrides)


def test_save_load_round_trip(tmp_path: Path) -> None:
    table = _table()
    path = tmp_path / "tables" / "cpu.json"
    table.save(path)
    assert LatencyTable.load(path) == table
    # A tuple in the run's fingerprint equals the list JSON stored: comparison is after a round trip.
    assert LatencyTable.load(path, expected_environment={**ENV, "head_levels": (4, 2, 0)}) == table
    document = json.loads(path.read_text())
    assert document["attention"] == {"0": 0.0, "2": 0.002, "4": 0.003}
    assert document["checksum"].startswith("sha256:")
    assert "\n  " in path.read_text()  # indented, readable
    assert sorted(p.name for p in path.parent.iterdir()) == ["cpu.json"]  # no temp file left behind

    table.save(path)  # overwriting in place works too
    assert LatencyTable.load(path) == table


def test_int_keyed_metadata_round_trips(tmp_path: Path) -> None:
    """JSON turns int keys into strings, whose sorted order differs (16 < 8 as text): the checksum must be
    taken of what loads back, or every such table would read as corrupt."""
    table = _table(metadata={"anchors": {"ffn": {8: 0.1, 16: 0.2, 0: 0.0}}})
    table.save(tmp_path / "t.json")
    assert LatencyTable.load(tmp_path / "t.json").metadata == {"anchors": {"ffn": {"0": 0.0, "8": 0.1, "16": 0.2}}}


def test_save_refuses_unserialisable_environment(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="JSON"):
        _table(environment={"device": object()}).save(tmp_path / "t.json")
    assert not list(tmp_path.iterdir())


def test_mismatching_environment_lists_each_difference(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    _table().save(path)
    run = {**ENV, "threads": 8, "seq_len": 384, "gpu_clock": 1410}
    del run["engine"]
    with pytest.raises(LatencyTableMismatchError) as info:
        LatencyTable.load(path, expected_environment=run)
    message = str(info.value)
    assert "threads: table=2 run=8" in message
    assert "seq_len: table=128 run=384" in message
    assert 'engine: table="torch" run=<missing>' in message
    assert "gpu_clock: table=<missing> run=1410" in message
    assert "ziplm latency" in message


def test_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ziplm latency model=<model> hardware=<hardware>"):
        LatencyTable.load(tmp_path / "nope.json")


def _rewrite(path: Path, edit: Any, fix_checksum: bool) -> None:
    document = json.loads(path.read_text())
    edit(document)
    if fix_checksum:
        document["checksum"] = _checksum({k: v for k, v in document.items() if k != "checksum"})
    path.write_text(json.dumps(document, indent=2))


@pytest.mark.parametrize(
    ("edit", "fix_checksum", "problem"),
    [
        (lambda d: d["ffn"].update({"8": 0.004}), False, "checksum mismatch"),
        (lambda d: d.update(base_time=0.021), False, "checksum mismatch"),
        (lambda d: d.pop("ffn"), False, "missing keys"),
        (lambda d: d.pop("checksum"), False, "missing keys"),
        (lambda d: d["attention"].update({"4": float("nan")}), True, "attention"),
        (lambda d: d["ffn"].update({"4": -0.001}), True, "ffn"),
        (lambda d: d.update(base_time="fast"), True, "could not convert"),
        (lambda d: d["ffn"].update({"eight": 0.005}), True, "invalid literal"),
        (lambda d: d.update(format_version=99), True, "not a ziplm-latency-table v1"),
    ],
)
def test_corrupt_files_are_refused(tmp_path: Path, edit: Any, fix_checksum: bool, problem: str) -> None:
    path = tmp_path / "t.json"
    _table().save(path)
    _rewrite(path, edit, fix_checksum)
    with pytest.raises(CorruptLatencyTableError, match=problem):
        LatencyTable.load(path)


@pytest.mark.parametrize("text", ["", "{", '{"format": "ziplm-latency-table", "base_', "[1, 2]", "\xff\xfe"])
def test_unreadable_files_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "t.json"
    _table().save(path)
    full = path.read_text()
    path.write_text(text or full[: len(full) // 2])  # "" → the real file truncated halfway
    with pytest.raises(CorruptLatencyTableError, match=r"t\.json is corrupt"):
        LatencyTable.load(path)
