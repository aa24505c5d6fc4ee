"""Real tiny sweeps through the CLI: the callback writes the report, a failing job does not stop the sweep.

Timing a tiny model on a shared CPU is noise, so each test first writes a deterministic latency table
(attention 0.1, FFN 0.3 per layer, T_base 1) into the sweep's cache at the exact fingerprint the
pipeline computes; every job, in this process or a joblib worker, then reuses it instead of measuring.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ziplm.config.paths import REPO_ROOT, compose
from ziplm.core.latency import LatencyTable
from ziplm.latency.cache import cache_path
from ziplm.latency.measure import environment_fingerprint
from ziplm.models import adapter_for, build_model
from ziplm.pipelines.common import environment, model_spec, task_head
from ziplm.pipelines.latency import level_grids

FAST = [
    "experiment=smoke",
    "hardware.threads=1",  # part of the table's fingerprint: the same in every process
    "hardware.batch_size=8",
    "hardware.seq_length=32",
    "hardware.repetitions=4",
    "teacher.epochs=0",
    "search.speedup_rounds=2",
    "search.speedup_corrections=0",
    "search.spdy_random_starts=1",
    "search.spdy_local_steps=1",
    "task.max_eval_samples=16",
    "hydra/callbacks=sweep_report",
]


def _seed_latency_cache(output_root: Path) -> None:
    cfg = compose([*FAST, f"output_root={output_root}"])
    threads = torch.get_num_threads()
    try:
        probe = build_model(model_spec(cfg), task_head(cfg), num_labels=int(cfg.task.num_labels)).eval()
        dims = adapter_for(probe).dims(probe)
        heads, ffn = level_grids(cfg, dims.num_heads, dims.intermediate_size)
        fingerprint = environment_fingerprint(environment(cfg), probe, heads, ffn)
    finally:
        torch.set_num_threads(threads)  # environment_fingerprint applied hardware.threads=1 here
    table = LatencyTable(
        environment=fingerprint,
        base_time=1.0,
        attention={k: 0.1 * k / max(heads) for k in heads},
        ffn={m: 0.3 * m / max(ffn) for m in ffn},
    )
    path = cache_path(str(cfg.cache_dir), fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.save(path)


def _sweep(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    _seed_latency_cache(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": ""}
    result = subprocess.run(
        [sys.executable, "-m", "ziplm", "run", "-m", *FAST, *overrides, f"output_root={tmp_path}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    sweeps = list((tmp_path / "multirun" / "smoke").iterdir())
    assert len(sweeps) == 1, result.stderr[-3000:]
    return result, sweeps[0]


def _measured_rows(sweep: Path) -> list[dict[str, str]]:
    return [row for row in csv.DictReader((sweep / "sweep.csv").open()) if row["kind"] == "measured"]


def test_a_failing_job_is_listed_and_the_sweep_goes_on(tmp_path: Path) -> None:
    result, sweep = _sweep(tmp_path, "search.targets=[0.5],[2.0]")  # job 0 fails at once, job 1 runs
    assert result.returncode == 1, result.stderr[-3000:]
    assert "error: sweep job" in result.stderr and "ValueError: speedup targets must be finite and > 1" in result.stderr
    assert "ziplm: 1 of 2 sweep jobs failed" in result.stderr
    assert (sweep / "0" / "FAILED").read_text().startswith("ValueError: speedup targets must be finite and > 1")
    assert (sweep / "1" / "results.md").is_file()  # the job after the failure ran
    md = (sweep / "sweep.md").read_text()
    assert "2 runs: 1 finished, 1 failed, 0 incomplete" in md
    assert "| 0 | failed | tiny-bert | tiny-cls | search.targets=[0.5] | ValueError: speedup targets must" in md
    assert [(r["run"], r["member"]) for r in _measured_rows(sweep)] == [("1", "dense"), ("1", "2x")]
    assert (sweep / "pareto_tiny-bert_tiny-cls_cpu.png").is_file()


@pytest.mark.slow  # the exit code alone is also covered by tests/test_cli.py
def test_a_single_run_failure_still_exits_1_without_a_failed_file(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": ""}
    result = subprocess.run(
        [sys.executable, "-m", "ziplm", "run", "experiment=smoke", "search.targets=[0.5]", f"output_root={tmp_path}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert "error: ValueError: speedup targets must be finite and > 1" in result.stderr
    assert not list(tmp_path.rglob("FAILED"))


@pytest.mark.slow
def test_two_seed_sweep_reports_both_jobs(tmp_path: Path) -> None:
    result, sweep = _sweep(tmp_path, "search.targets=[2.0]", "seed=0,1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sweep report:" in result.stdout
    md = (sweep / "sweep.md").read_text()
    assert "2 runs: 2 finished, 0 failed, 0 incomplete" in md and "| seed=1 |" in md
    rows = _measured_rows(sweep)
    assert [(r["run"], r["seed"], r["member"]) for r in rows] == [
        ("0", "0", "dense"), ("0", "0", "2x"), ("1", "1", "dense"), ("1", "1", "2x")
    ]  # fmt: skip
    assert all(float(r["measured_speedup"]) > 0 for r in rows)


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    result, sweep = _sweep(tmp_path, "hydra/launcher=joblib", "search.targets=[2.0]", "seed=0,1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    md = (sweep / "sweep.md").read_text()
    assert "2 runs: 2 finished, 0 failed, 0 incomplete" in md
    assert sorted({r["run"] for r in _measured_rows(sweep)}) == ["0", "1"]
