"""`MemberRecord`: the metrics.json of a member (or the dense model) as a dataclass whose JSON is the dict
earlier versions wrote, byte for byte, and the end-of-run report built from records (the same markdown)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ziplm.report.records import MemberRecord
from ziplm.report.results import correction_notes, results_rows, results_table, write_report

DENSE: dict[str, Any] = {
    "member": "dense",
    "parameters": 4386178,
    "metric/accuracy": 91.25,
    "metric/f1": 90.5,
    "eval_precision": "32-true",
}
ATTEMPTS = [
    {"search_target": 1.5, "predicted": 1.5, "measured": 1.31},
    {"search_target": 1.62, "predicted": 1.62, "measured": 1.47},
]
SEARCHED: dict[str, Any] = {  # a one-shot / gradual member (search null: no task-loss batches)
    "member": "1.5x",
    "target_speedup": 1.5,
    "predicted_speedup": 1.5012,
    "measured_speedup": 1.4731,
    "deviation": 1.4731 / 1.5 - 1,
    "parameters": 3012345,
    "heads_kept": [4, 3],
    "neurons_kept": [64, 33],
    "metric/accuracy": 88.0,
    "metric/f1": 87.25,
    "eval_precision": "32-true",
    "saved_dtype": "float32",
    "method": "obs",
    "search": None,
    "search_target": 1.62,
    "attempts": ATTEMPTS,
    "evaluate_measure_seconds": 3.25,
}
LAYERDROP: dict[str, Any] = {
    "member": "2x",
    "target_speedup": 2.0,
    "predicted_speedup": 2.1,
    "measured_speedup": 2.05,
    "deviation": 0.025,
    "parameters": 2000000,
    "heads_kept": [4, 0],
    "neurons_kept": [64, 0],
    "metric/accuracy": 80.5,
    "metric/f1": 79.0,
    "eval_precision": "32-true",
    "saved_dtype": "bfloat16",
    "method": "layerdrop",
    "layers_kept": [0],
    "evaluate_measure_seconds": 1.5,
}
WITH_SEARCH = SEARCHED | {"search": {"dp_error": 0.5, "log": [{"phase": "dp", "loss": 1.0}]}}
OLDER = {k: v for k, v in SEARCHED.items() if k not in ("attempts", "search_target", "search", "saved_dtype")}
UNKNOWN = DENSE | {"from_a_later_version": [1, 2]}


@pytest.mark.parametrize("data", [DENSE, SEARCHED, WITH_SEARCH, LAYERDROP, OLDER, UNKNOWN])
def test_json_round_trip_is_byte_identical(data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2) + "\n"
    record = MemberRecord.from_json(json.loads(text))
    assert record.dumps() == text
    assert MemberRecord.from_json(record.to_json()) == record


def test_fields_are_typed_attributes(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(SEARCHED, indent=2) + "\n")
    record = MemberRecord.load(path)
    assert (record.member, record.method, record.search, record.attempts) == ("1.5x", "obs", None, ATTEMPTS)
    assert record.metrics == {"accuracy": 88.0, "f1": 87.25} and record.metric("f1") == 87.25
    with pytest.raises(KeyError, match="no metric 'bleu'"):
        record.metric("bleu")
    with pytest.raises(ValueError, match="no parameters"):
        MemberRecord.from_json({"member": "2x"})


def test_report_table_and_notes_are_unchanged(tmp_path: Path) -> None:
    """The markdown of the dict-based report before records existed, for the same three records (plus the
    encoder column, "—" for records written before encoder counts were)."""
    dense, members = (
        MemberRecord.from_json(DENSE),
        [MemberRecord.from_json(SEARCHED), MemberRecord.from_json(LAYERDROP)],
    )
    assert results_table(dense, members, "accuracy") == (
        "| model | target | predicted | measured | deviation | accuracy | Δ vs dense | params (M) | % params "
        "| blocks (M) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        "| dense | 1.00× | 1.00× | 1.00× | — | 91.25 | — | 4.39 | 100.0 | — |\n"
        "| 1.5x | 1.50× | 1.50× | 1.47× | -1.8% | 88.00 | -3.25 | 3.01 | 68.7 | — |\n"
        "| 2x | 2.00× | 2.10× | 2.05× | +2.5% | 80.50 | -10.75 | 2.00 | 45.6 | — |\n"
    )
    header, rows = results_rows(dense, members, "accuracy")
    assert len(header) == 10 and [r[0] for r in rows] == ["dense", "1.5x", "2x"]
    assert correction_notes(members) == [
        "member 1.5x: searched at 1.50× (table 1.50×) → measured 1.31×; searched at 1.62× (table 1.62×) → measured "
        "1.47×; kept the one searched at 1.62× (of those measured at least 1.50× × (1 − tolerance), the closest; else "
        "the fastest)"
    ]
    write_report(tmp_path, dense, members, "accuracy", "title")
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [DENSE, SEARCHED, LAYERDROP]
