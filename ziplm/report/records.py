"""The record of one evaluated model of a run: the dense teacher (``dense_metrics.json``) or a family member
(``family/<t>x/metrics.json``).

`MemberRecord` is what the pipeline builds and the end-of-run report reads; `to_json` writes exactly the
dict earlier versions wrote (same keys, same order, absent fields left out), so `from_json(...).to_json()`
gives back the dict of any metrics.json, and the sweep report (`ziplm.report.sweep`), which reads the JSON
itself, is unaffected. Keys this version does not know are kept in `other` and written back last.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRIC_PREFIX = "metric/"
# JSON keys in the order they are written; a None field is left out, except `search` (null when the
# search had no task-loss batches), which is written whenever the member came from a search.
_BEFORE_METRICS = ("member", "target_speedup", "predicted_speedup", "measured_speedup", "deviation", "parameters",
                   "encoder_parameters", "heads_kept", "neurons_kept")  # fmt: skip
_AFTER_METRICS = ("eval_precision", "saved_dtype", "method", "search", "search_target", "attempts", "layers_kept",
                  "block_influence", "evaluate_measure_seconds", "speedup_interval", "target_status",
                  "tolerance")  # fmt: skip


@dataclass
class MemberRecord:
    """One model's measurements. Dense records have only member, parameters, metrics and eval_precision.

    Attributes:
        member: "dense" or the target as a folder name ("2x", "1.5x").
        metrics: task metrics by name (written as ``metric/<name>`` keys).
        search: the SPDY search log (`SearchResult.to_dict`), None without task-loss batches.
        search_target: the target the kept candidate was searched at (corrected from measurement).
        attempts: every search-and-measure try (`Attempt.to_dict`), in order.
        layers_kept: layer dropping only: the teacher layers the member keeps.
        block_influence: blockdrop only: each layer's Block Influence on the model it was cut from (None for
            a layer dropped before), the scores that chose `layers_kept`.
        target_status: whether the measured speedup met the target within `tolerance`; a member more than
            that below its target is "missed" and reported so, never as meeting it.
        encoder_parameters: the Transformer layers' parameters only (no embeddings, no task head): the count
            CoFi and the ZipLM paper compare; ``parameters`` is the whole model.
        other: keys of the JSON this class does not know (kept so that a round trip loses nothing).
    """

    member: str
    parameters: int
    metrics: dict[str, Any] = field(default_factory=dict)
    eval_precision: str | None = None
    target_speedup: float | None = None
    predicted_speedup: float | None = None
    measured_speedup: float | None = None
    deviation: float | None = None
    heads_kept: list[int] | None = None
    neurons_kept: list[int] | None = None
    saved_dtype: str | None = None
    method: str | None = None
    search: dict[str, Any] | None = None
    search_target: float | None = None
    attempts: list[dict[str, float]] | None = None
    layers_kept: list[int] | None = None
    block_influence: list[float | None] | None = None
    evaluate_measure_seconds: float | None = None
    encoder_parameters: int | None = None
    speedup_interval: list[float] | None = None  # ~95% interval of measured_speedup ([low, high])
    target_status: str | None = None  # "on target" | "faster than target" | "missed" (`target_status`)
    tolerance: float | None = None  # the tolerance the status was judged with (above the noise floor)
    other: dict[str, Any] = field(default_factory=dict)

    @property
    def is_dense(self) -> bool:
        return self.member == "dense"

    def metric(self, name: str) -> Any:
        """The value of metric `name` (KeyError naming the metrics recorded)."""
        if name not in self.metrics:
            raise KeyError(f"member {self.member} has no metric {name!r}; recorded: {sorted(self.metrics)}")
        return self.metrics[name]

    def to_json(self) -> dict[str, Any]:
        """The metrics.json dict (key order as written since the first version)."""
        out: dict[str, Any] = {}
        for key in _BEFORE_METRICS:
            self._put(out, key)
        out.update({f"{METRIC_PREFIX}{k}": v for k, v in self.metrics.items()})
        for key in _AFTER_METRICS:
            self._put(out, key)
        out.update(self.other)
        return out

    def _put(self, out: dict[str, Any], key: str) -> None:
        value = getattr(self, key)
        if value is not None or (key == "search" and self.search_target is not None):
            out[key] = value

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MemberRecord:
        """A record from a metrics.json dict (ValueError when it lacks member or parameters)."""
        missing = [k for k in ("member", "parameters") if k not in data]
        if missing:
            raise ValueError(f"not a member record: no {', '.join(missing)} in keys {sorted(data)}")
        known = {*_BEFORE_METRICS, *_AFTER_METRICS}
        fields: dict[str, Any] = {k: data[k] for k in known if k in data}
        metrics = {k.removeprefix(METRIC_PREFIX): v for k, v in data.items() if k.startswith(METRIC_PREFIX)}
        other = {k: v for k, v in data.items() if k not in known and not k.startswith(METRIC_PREFIX)}
        return cls(metrics=metrics, other=other, **fields)

    def dumps(self) -> str:
        """The metrics.json text (2-space indent, trailing newline)."""
        return json.dumps(self.to_json(), indent=2) + "\n"

    def save(self, path: Path) -> None:
        path.write_text(self.dumps())

    @classmethod
    def load(cls, path: Path) -> MemberRecord:
        return cls.from_json(json.loads(path.read_text()))
