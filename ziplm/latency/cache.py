"""Latency tables are expensive to measure: cache them by environment fingerprint and reuse them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from ziplm.core.latency import LatencyTable
from ziplm.latency.measure import Environment, environment_fingerprint, measure_latency_table


def cache_path(cache_dir: str | Path, fingerprint: dict[str, object]) -> Path:
    """Where the table for `fingerprint` lives: one file per distinct environment × model shape."""
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
    name = f"{fingerprint['model_type']}-{fingerprint['dims']['hidden_size']}-b{fingerprint['batch_size']}"  # type: ignore[index]
    return Path(cache_dir) / "latency" / f"{name}-s{fingerprint['seq_length']}-{key}.json"


def load_or_measure(
    model: nn.Module,
    env: Environment,
    head_levels: Sequence[int],
    ffn_levels: Sequence[int],
    cache_dir: str | Path,
    show_progress: bool = True,
) -> tuple[LatencyTable, Path, bool]:
    """The table for this model shape in `env`: from the cache if present, else measured and cached.

    Returns:
        (table, path of the cached file, whether it came from the cache).
    """
    env.validate()
    fingerprint = environment_fingerprint(env, model, head_levels, ffn_levels)
    path = cache_path(cache_dir, fingerprint)
    if path.exists():
        return LatencyTable.load(path, expected_environment=fingerprint), path, True
    table = measure_latency_table(model, env, head_levels, ffn_levels, show_progress=show_progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.save(path)
    return table, path, False
