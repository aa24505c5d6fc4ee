"""Latency table (measured per inference environment) and the additive latency model built on it.

A `LatencyTable` holds, for one environment (device, dtype, batch size, sequence length, engine, …),
the end-to-end time of the dense model and the time of ONE attention block / ONE FFN block at every
pruning level. All layers of a model share shapes, so one table serves every layer.

`LatencyModel` turns the table into predictions (spec §4–5):
    T(config) = (T_base − T_prunable) + Σ_l t_attn[h_l] + t_ffn[m_l],   speedup S = T_base / T(config)
and into the time budget a DP search must respect for a target speedup.

Search units are laid out layer-major: unit 2l is the attention of layer l, unit 2l+1 its FFN.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "ziplm-latency-table"
FORMAT_VERSION = 1
_REQUIRED_KEYS = ("environment", "base_time", "attention", "ffn", "checksum")
_HOW_TO_MEASURE = "ziplm latency model=<model> hardware=<hardware>"


class CorruptLatencyTableError(ValueError):
    """The latency table file is unreadable, incomplete, hand-edited or holds impossible times."""


class LatencyTableMismatchError(ValueError):
    """The latency table was measured in a different environment than the current run."""


class UnreachableTargetError(ValueError):
    """The requested speedup cannot be reached under the additive latency model."""


def format_speedup(speedup: float) -> str:
    """Human-readable speedup, e.g. ``3.20×``."""
    return f"{speedup:.2f}×"


def _validate_times(name: str, times: dict[Any, Any]) -> dict[int, float]:
    """Check one level→time mapping and normalise it to ``dict[int, float]``.

    Level 0 (module removed) may cost exactly 0 s: the sublayer is the identity, and a caller may
    record that instead of timing an empty op. Every other level must take a positive time.
    """
    if not isinstance(times, dict) or not times:
        raise ValueError(f"{name} must be a non-empty mapping from kept count to seconds")
    out: dict[int, float] = {}
    for key, value in times.items():
        level = int(key)
        if level < 0 or str(level) != str(key).strip():
            raise ValueError(f"{name} has an invalid level key {key!r} (expected a non-negative integer)")
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and level != 0):
            raise ValueError(f"{name}[{level}] = {seconds!r} is not a valid time (must be finite and > 0)")
        out[level] = seconds
    return out


def _canonical(payload: dict[str, Any]) -> str:
    # sort_keys + compact separators give one byte string per content; Python floats round-trip
    # exactly through repr, so a load → re-dump reproduces the string the checksum was taken of.
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _checksum(payload: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(_canonical(payload).encode("ascii")).hexdigest()


def _json_normalised(value: Any) -> Any:
    """What `value` becomes after a JSON round trip (tuples → lists, int keys → str keys)."""
    return json.loads(json.dumps(value, sort_keys=True))


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def level_time(times: Mapping[int, float], keep: int) -> float:
    """Time of level `keep` from the times of measured levels: exact at a measured level, on the straight line
    between its two neighbours otherwise (KeyError outside them). The one interpolation of table times:
    the search prices database levels the table lacks with it, and the table measurement fills its
    levels between whole-model anchors with it (`ziplm.latency.anchors.through_anchors`)."""
    if keep in times:
        return times[keep]
    below = max((k for k in times if k < keep), default=None)
    above = min((k for k in times if k > keep), default=None)
    if below is None or above is None:
        raise KeyError(f"kept count {keep} is outside the latency table's levels {sorted(times)}")
    w = (keep - below) / (above - below)
    return (1 - w) * times[below] + w * times[above]


@dataclass
class LatencyTable:
    """Measured block times for one inference environment.

    Attributes:
        environment: fingerprint of where the times were measured (device name, torch version, threads,
            dtype, batch size, sequence length, engine, model dims, level grids, …). Opaque JSON-able
            dict; compared for equality after a JSON round trip.
        base_time: T_base, the dense model end to end, in seconds.
        attention: seconds of ONE attention block keeping k heads, for every head level incl. 0.
        ffn: seconds of ONE FFN block keeping m neurons, for every FFN level incl. 0.
        metadata: free-form JSON-able measurement details, e.g. ``{"repetitions": 100,
            "spread": {"attention": {"12": 0.01}, ...}}`` (relative spread of each median).
    """

    environment: dict[str, Any]
    base_time: float
    attention: dict[int, float]
    ffn: dict[int, float]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.environment, dict):
            raise ValueError(f"environment must be a dict, got {type(self.environment).__name__}")
        if not isinstance(self.metadata, dict):
            raise ValueError(f"metadata must be a dict, got {type(self.metadata).__name__}")
        self.base_time = float(self.base_time)
        if not math.isfinite(self.base_time) or self.base_time <= 0:
            raise ValueError(f"base_time = {self.base_time!r} is not a valid time (must be finite and > 0)")
        self.attention = _validate_times("attention", self.attention)
        self.ffn = _validate_times("ffn", self.ffn)

    def _payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            # as they will read back: int keys become strings, so the checksum's key order is the loaded one
            "environment": _json_normalised(self.environment),
            "base_time": self.base_time,
            "attention": {str(k): v for k, v in sorted(self.attention.items())},
            "ffn": {str(k): v for k, v in sorted(self.ffn.items())},
            "metadata": _json_normalised(self.metadata),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the table as indented JSON with a sha256 checksum, atomically (tmp file + rename).

        Raises:
            TypeError: environment or metadata hold values JSON cannot represent.
        """
        target = Path(path)
        try:
            payload = self._payload()
            document = {**payload, "checksum": _checksum(payload)}
            text = json.dumps(document, indent=2, allow_nan=False) + "\n"
        except (TypeError, ValueError) as err:
            raise TypeError(f"latency table is not JSON-serialisable ({err}); use plain values") from err
        target.parent.mkdir(parents=True, exist_ok=True)
        # A temp file in the same folder makes os.replace an atomic rename: a reader sees the old or
        # the new table, never half of one (several jobs may measure into a shared table folder).
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str], expected_environment: dict[str, Any] | None = None) -> LatencyTable:
        """Read a table written by `save`, verifying its checksum, times and (optionally) environment.

        Args:
            path: the JSON file.
            expected_environment: the current run's fingerprint; when given, it must equal the table's.

        Raises:
            FileNotFoundError: no file at `path` (the message says how to measure one).
            CorruptLatencyTableError: unreadable JSON, missing keys, checksum mismatch, invalid times.
            LatencyTableMismatchError: the table was measured in a different environment.
        """
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(
                f"no latency table at {source}; measure one for this model and hardware with `{_HOW_TO_MEASURE}`"
            )
        table = cls._parse(source)
        if expected_environment is not None:
            table.check_environment(expected_environment, source=str(source))
        return table

    @classmethod
    def _parse(cls, source: Path) -> LatencyTable:
        def corrupt(problem: str) -> CorruptLatencyTableError:
            return CorruptLatencyTableError(
                f"latency table {source} is corrupt: {problem}; delete it and re-measure with `{_HOW_TO_MEASURE}`"
            )

        try:
            document = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise corrupt(f"unreadable JSON ({err})") from err
        if not isinstance(document, dict):
            raise corrupt("the top level is not a JSON object")
        if document.get("format") != FORMAT or document.get("format_version") != FORMAT_VERSION:
            raise corrupt(f"not a {FORMAT} v{FORMAT_VERSION} file")
        missing = [key for key in _REQUIRED_KEYS if key not in document]
        if missing:
            raise corrupt(f"missing keys {missing}")
        payload = {k: v for k, v in document.items() if k != "checksum"}
        payload.setdefault("metadata", {})
        if _checksum(payload) != document["checksum"]:
            raise corrupt("checksum mismatch (the file was edited or damaged)")
        try:
            return cls(
                environment=payload["environment"],
                base_time=payload["base_time"],
                attention=payload["attention"],
                ffn=payload["ffn"],
                metadata=payload["metadata"],
            )
        except (TypeError, ValueError) as err:
            raise corrupt(str(err)) from err

    def environment_differences(self, expected: dict[str, Any]) -> list[str]:
        """Each differing fingerprint key as ``key: table=<a> run=<b>`` (JSON values, sorted by key)."""
        mine, theirs = _json_normalised(self.environment), _json_normalised(expected)
        missing = object()
        lines = []
        for key in sorted(set(mine) | set(theirs)):
            a, b = mine.get(key, missing), theirs.get(key, missing)
            if a != b:
                shown_a = "<missing>" if a is missing else _show(a)
                shown_b = "<missing>" if b is missing else _show(b)
                lines.append(f"{key}: table={shown_a} run={shown_b}")
        return lines

    def check_environment(self, expected: dict[str, Any], source: str = "latency table") -> None:
        """Raise `LatencyTableMismatchError` unless the table was measured in `expected`."""
        differences = self.environment_differences(expected)
        if differences:
            listed = "\n  ".join(differences)
            raise LatencyTableMismatchError(
                f"{source} was measured in a different environment than this run:\n  {listed}\n"
                f"re-measure it for this environment with `{_HOW_TO_MEASURE}`"
            )


class LatencyModel:
    """Additive latency model over the per-block times of a `LatencyTable` (spec §4).

    Args:
        table: the measured times; its largest attention/FFN levels are taken as the dense widths.
        num_layers: L, the number of Transformer layers (each has one attention and one FFN block).

    Raises:
        ValueError: num_layers < 1, or the dense blocks alone take at least T_base (inconsistent table).
    """

    def __init__(self, table: LatencyTable, num_layers: int) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.table = table
        self.num_layers = num_layers
        self.dense_heads = max(table.attention)
        self.dense_neurons = max(table.ffn)
        self.prunable_time = num_layers * (table.attention[self.dense_heads] + table.ffn[self.dense_neurons])
        # Embeddings, LM head, data movement, …: what no pruning choice can remove.
        self.overhead = table.base_time - self.prunable_time
        if self.overhead <= 0:
            attn, ffn = table.attention[self.dense_heads], table.ffn[self.dense_neurons]
            raise ValueError(
                f"latency table is inconsistent: {num_layers} layers × (attention {attn:.6g} s + FFN "
                f"{ffn:.6g} s) = {self.prunable_time:.6g} s is not below the dense end-to-end time "
                f"T_base = {table.base_time:.6g} s; re-measure with `{_HOW_TO_MEASURE}`"
            )
        # The fastest configuration keeps the cheapest level of every block; with removed blocks timed
        # at 0 s it is just the overhead, which is spec §4's bound T_base / (T_base − T_prunable).
        self.min_time = self.overhead + num_layers * (min(table.attention.values()) + min(table.ffn.values()))

    @property
    def base_time(self) -> float:
        """T_base: the dense model end to end, in seconds."""
        return self.table.base_time

    @property
    def max_speedup(self) -> float:
        """Largest speedup the model can predict: T_base / time of the fastest configuration."""
        return self.table.base_time / self.min_time

    @property
    def max_layer_preserving_speedup(self) -> float:
        """Largest speedup that keeps at least one sublayer in every layer (its cheapest kept level).

        Targets above it can only be met by removing whole layers' worth of blocks everywhere: the
        "member" is then mostly embeddings and classifier (a warning, not an error: layer dropping is a
        legitimate choice, but rarely the one meant).
        """
        kept_attention = [t for k, t in self.table.attention.items() if k > 0]
        kept_ffn = [t for k, t in self.table.ffn.items() if k > 0]
        cheapest = min(kept_attention + kept_ffn)
        return self.table.base_time / (self.overhead + self.num_layers * cheapest)

    def attention_time(self, heads: int) -> float:
        """Seconds of one attention block keeping `heads` heads (ValueError for an untimed level)."""
        if heads not in self.table.attention:
            raise ValueError(
                f"the latency table has no attention timing for {heads} kept heads; "
                f"timed levels: {sorted(self.table.attention)}"
            )
        return self.table.attention[heads]

    def ffn_time(self, neurons: int) -> float:
        """Seconds of one FFN block keeping `neurons` neurons (ValueError for an untimed level)."""
        if neurons not in self.table.ffn:
            raise ValueError(
                f"the latency table has no FFN timing for {neurons} kept neurons; "
                f"timed levels: {sorted(self.table.ffn)}"
            )
        return self.table.ffn[neurons]

    def predict(self, choice: Sequence[tuple[int, int]]) -> float:
        """Predicted end-to-end seconds for per-layer ``(kept heads, kept neurons)``, length L."""
        if len(choice) != self.num_layers:
            raise ValueError(f"choice has {len(choice)} layers, the model has {self.num_layers}")
        blocks = sum(self.attention_time(heads) + self.ffn_time(neurons) for heads, neurons in choice)
        return self.overhead + blocks

    def speedup(self, choice: Sequence[tuple[int, int]]) -> float:
        """Predicted speedup T_base / T(choice) of a per-layer ``(kept heads, kept neurons)`` choice."""
        return self.table.base_time / self.predict(choice)

    def check_reachable(self, targets: Sequence[float]) -> None:
        """Refuse, before any search, the targets this table cannot reach.

        Raises:
            UnreachableTargetError: naming the targets and the maximum reachable speedup.
        """
        too_far = [t for t in targets if t >= self.max_speedup]
        if too_far:
            raise UnreachableTargetError(
                f"targets {too_far} are unreachable in this environment: the maximum reachable speedup is "
                f"{format_speedup(self.max_speedup)} (everything prunable removed)"
            )

    def budget(self, target_speedup: float) -> float:
        """Seconds the prunable blocks may take together to reach `target_speedup` (spec §5).

        Returns:
            T_base / S − (T_base − T_prunable).

        Raises:
            UnreachableTargetError: S is not finite, below 1×, or not below `max_speedup`.
        """
        reach = format_speedup(self.max_speedup)
        if not math.isfinite(target_speedup) or target_speedup < 1:
            raise UnreachableTargetError(
                f"target speedup {target_speedup!r} is not valid: it must be a finite number >= 1× "
                f"(the maximum reachable speedup with this latency table is {reach})"
            )
        if target_speedup >= self.max_speedup:
            raise UnreachableTargetError(
                f"target speedup {format_speedup(target_speedup)} is unreachable: the maximum reachable "
                f"speedup with this latency table is {reach} (the unprunable part alone takes "
                f"{self.overhead:.6g} s of T_base = {self.base_time:.6g} s)"
            )
        return self.table.base_time / target_speedup - self.overhead

    def unit_times(
        self, head_levels: Sequence[Sequence[int]], ffn_levels: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        """Per-unit option times for the search, in unit order (2l = attention of l, 2l+1 = its FFN).

        Args:
            head_levels: for each layer, the kept-head counts it may choose from (length L).
            ffn_levels: for each layer, the kept-neuron counts it may choose from (length L).
        """
        if len(head_levels) != self.num_layers or len(ffn_levels) != self.num_layers:
            raise ValueError(
                f"need level lists for all {self.num_layers} layers, got {len(head_levels)} attention "
                f"and {len(ffn_levels)} FFN lists"
            )
        units: list[list[float]] = []
        for heads, neurons in zip(head_levels, ffn_levels, strict=True):
            units.append([self.attention_time(h) for h in heads])
            units.append([self.ffn_time(m) for m in neurons])
        return units
