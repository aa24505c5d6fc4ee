"""Published reference numbers carried by experiment presets (``reference:`` in the composed config).

Format read here (documented in experiments/README.md by the presets' author)::

    reference:
      source: "Kurtic et al., ZipLM, NeurIPS 2023"      # default citation of the rows
      rows:
        - {method: CoFi, citation: "Xia et al. 2022", task: squad, hardware: v100-b128,
           speedup: 2.0, metric_name: f1, metric: 89.1, note: "..."}

Per row: ``method`` and ``metric`` (the value) are required; ``citation`` (or ``source``) defaults to
the block's ``source``; ``model``/``task`` default to the run's and restrict the row to runs of that
model/task; ``metric_name`` defaults to the run's metric; ``speedup`` and ``hardware`` may be null (a
row without a speedup is listed but not plotted). The shorthand ``{source, metric: <name>,
results: {<speedup>: <value>}, method?, hardware?}`` is read as one row per entry of ``results``.
Other keys (``listed``, ``claims``) are ignored. These numbers are never re-run: reports mark them so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ReferenceRow:
    """One published number, placed in the report group of the run that carried it."""

    model: str
    task: str
    hardware: str  # the group's (our) hardware; where the paper measured is `measured_on`
    method: str
    citation: str
    speedup: float | None
    metric: float
    metric_name: str
    measured_on: str | None = None
    note: str | None = None

    @property
    def label(self) -> str:
        where = f", {self.measured_on}" if self.measured_on else ""
        return f"{self.method} ({self.citation}{where})"


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return number


def _row(raw: Any, block: Mapping[str, Any], run: Mapping[str, str]) -> ReferenceRow | None:
    """The row as a ReferenceRow, or None when it belongs to another model/task than the run's."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"a reference row must be a mapping, got {raw!r}")
    missing = [key for key in ("method", "metric") if raw.get(key) is None]
    if missing:
        raise ValueError(f"reference row {dict(raw)} lacks {missing}")
    if raw.get("model") not in (None, run["model"]) or raw.get("task") not in (None, run["task"]):
        return None
    speedup = raw.get("speedup")
    return ReferenceRow(
        model=run["model"],
        task=run["task"],
        hardware=run["hardware"],
        method=str(raw["method"]),
        citation=str(raw.get("citation") or raw.get("source") or block.get("source") or "uncited"),
        speedup=None if speedup is None else _number(speedup, f"speedup of {raw['method']}"),
        metric=_number(raw["metric"], f"metric of {raw['method']}"),
        metric_name=str(raw.get("metric_name") or run["metric"]),
        measured_on=None if raw.get("hardware") is None else str(raw["hardware"]),
        note=None if raw.get("note") is None else str(raw["note"]),
    )


def parse_references(block: Any, run: Mapping[str, str]) -> list[ReferenceRow]:
    """The reference rows of one run's ``reference`` block that apply to its model and task.

    Args:
        block: the ``reference`` value of the composed config (``{}`` when the preset has none).
        run: the run's ``model``, ``task``, ``hardware`` and headline ``metric`` names.

    Raises:
        ValueError: a malformed block or row (the caller reports it and keeps going).
    """
    if block is None or block == {}:
        return []
    if not isinstance(block, Mapping):
        raise ValueError(f"`reference` must be a mapping, got {type(block).__name__}")
    raw_rows: list[Any] = list(block.get("rows") or [])
    results = block.get("results")
    if results is not None:  # shorthand: {speedup: value} under one method and metric name
        if not isinstance(results, Mapping):
            raise ValueError(f"`reference.results` must map speedup -> metric, got {results!r}")
        raw_rows += [
            {
                "method": block.get("method", "ZipLM (paper)"),
                "speedup": speedup,
                "metric": value,
                "metric_name": block.get("metric"),
                "hardware": block.get("hardware"),
            }
            for speedup, value in results.items()
        ]
    rows = [_row(raw, block, run) for raw in raw_rows]
    return [row for row in rows if row is not None]
