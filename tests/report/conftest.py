"""Synthetic run folders, laid out as `ziplm run` and Hydra's multirun write them (no pipeline needed)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

MakeRun = Callable[..., Path]


def make_run(
    folder: Path,
    *,
    model: str = "tiny-bert",
    task: str = "tiny-cls",
    metric: str = "accuracy",
    hardware: str = "cpu",
    schedule: str = "oneshot",
    method: str = "obs",
    targets: Sequence[float] = (1.5, 2.0),
    members: dict[float, tuple[float, float]] | None = None,  # target -> (measured speedup, metric)
    dense_metric: float | None = 90.0,
    finished: bool = True,
    overrides: Sequence[str] = (),
    reference: dict[str, Any] | None = None,
    command: str = "run",
    name: str = "smoke",
    seed: int = 0,
) -> Path:
    """A run folder: .hydra/{config,overrides}.yaml, dense_metrics.json, family/<t>x/metrics.json, results.md."""
    hydra = folder / ".hydra"
    hydra.mkdir(parents=True)
    config = {
        "command": command,
        "name": name,
        "seed": seed,
        "output_root": "outputs",
        "cache_dir": "${output_root}/cache",  # unresolved, as Hydra saves it
        "model": {"name": model, "family": "bert"},
        "task": {"name": task, "metric": metric},
        "hardware": {"name": hardware},
        "schedule": {"name": schedule},
        "pruner": {"method": method},
        "search": {"targets": list(targets)},
        "logger": {"kind": "none"},
        "reference": reference or {},
    }
    (hydra / "config.yaml").write_text(yaml.safe_dump(config))
    (hydra / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"command={command}"]))
    key = "perplexity" if metric == "perplexity" else metric
    if dense_metric is not None:
        dense = {"member": "dense", "parameters": 1_000_000, f"metric/{key}": dense_metric}
        (folder / "dense_metrics.json").write_text(json.dumps(dense))
    for target, (measured, value) in (members or {}).items():
        member = folder / "family" / f"{target:g}x"
        member.mkdir(parents=True)
        record = {
            "member": f"{target:g}x",
            "target_speedup": target,
            "predicted_speedup": target * 1.01,
            "measured_speedup": measured,
            "deviation": measured / target - 1,
            "parameters": int(1_000_000 / target),
            f"metric/{key}": value,
        }
        (member / "metrics.json").write_text(json.dumps(record))
    if finished:
        (folder / "results.md").write_text("# results\n")
    (folder / "ziplm.log").write_text("")
    return folder


@pytest.fixture
def runs() -> MakeRun:
    return make_run
