"""`ziplm run trainer=ddp-cpu` (2 processes, gloo) makes the family a 1-process run makes.

Both runs share one cache (teacher and latency table), so the only difference is the process count:
calibration Hessians (summed over ranks), the database, the searched structures, the members' weights
and the metrics must agree; timings are measured afresh and may differ.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

COMMON = ["experiment=smoke", "search.speedup_corrections=0", "pruner.calibration_samples=64"]  # 2 batches


def _run(root: Path, cache: Path, *args: str) -> Path:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "ziplm", "run", *COMMON, f"output_root={root}", f"cache_dir={cache}", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = (root / "run" / "smoke").iterdir()
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("ddp")
    one = _run(base / "one", base / "cache")  # trains the teacher, measures the table: both cached
    two = _run(base / "two", base / "cache", "trainer=ddp-cpu")
    return one, two


def _floats(a: object, b: object, path: str = "") -> float:
    """Largest relative difference between the floats of two equal-shaped JSON trees (others must be equal)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        return max([_floats(a[k], b[k], f"{path}/{k}") for k in a if k != "build_seconds"], default=0.0)
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        return max([_floats(x, y, path) for x, y in zip(a, b, strict=True)], default=0.0)
    if isinstance(a, float):
        return abs(a - float(b)) / max(abs(a), 1e-30)  # type: ignore[arg-type]
    assert a == b, path
    return 0.0


def test_both_runs_finish_with_a_report(runs: tuple[Path, Path]) -> None:
    one, two = runs
    assert (one / "results.md").is_file() and (two / "results.md").is_file()
    assert (two / "rank1.log").is_file()  # the second process wrote its own log, not the report
    assert not (one / "rank1.log").exists()


def test_same_database_from_hessians_summed_over_ranks(runs: tuple[Path, Path]) -> None:
    one, two = runs
    a = json.loads((one / "database" / "manifest.json").read_text())
    b = json.loads((two / "database" / "manifest.json").read_text())
    assert a["fingerprint"] == b["fingerprint"]
    assert _floats(a["layers"], b["layers"]) < 1e-9  # float64 rounding of the summed Hessians


def test_same_dense_metrics_structures_and_members(runs: tuple[Path, Path]) -> None:
    one, two = runs
    assert json.loads((one / "dense_metrics.json").read_text()) == json.loads((two / "dense_metrics.json").read_text())
    members = sorted(p.name for p in (one / "family").iterdir())
    assert members == sorted(p.name for p in (two / "family").iterdir()) == ["1.5x", "2x"]
    for member in members:
        a = json.loads((one / "family" / member / "metrics.json").read_text())
        b = json.loads((two / "family" / member / "metrics.json").read_text())
        same = ["heads_kept", "neurons_kept", "predicted_speedup", "parameters", "search_target"]
        scores = [key for key in a if key.startswith("metric/")]
        assert scores, a
        for key in same + scores:
            assert a[key] == b[key], (member, key)
        wa = load_file(str(one / "family" / member / "model.safetensors"))
        wb = load_file(str(two / "family" / member / "model.safetensors"))
        assert wa.keys() == wb.keys()
        for name, tensor in wa.items():
            torch.testing.assert_close(tensor, wb[name], rtol=1e-6, atol=1e-7, msg=f"{member} {name}")


def test_a_spawning_strategy_is_refused_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "ziplm", "run", "experiment=smoke", "trainer=ddp-cpu", "trainer.strategy=ddp_spawn",
           f"output_root={tmp_path}"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "ddp_spawn" in done.stderr and "use trainer.strategy=ddp" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_multi_process_trainer_in_a_local_sweep_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "ziplm", "run", "-m", "experiment=smoke", "trainer=ddp-cpu", "seed=0",
           f"output_root={tmp_path}"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "inside a local -m sweep is not supported" in done.stderr
    assert not list(tmp_path.rglob("rank1.log"))  # no second process was started


def test_eval_of_a_member_on_two_processes_matches_one(runs: tuple[Path, Path], tmp_path: Path) -> None:
    member = runs[0] / "family" / "2x"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    results = []
    for trainer in ("cpu", "ddp-cpu"):
        out = tmp_path / trainer
        cmd = [sys.executable, "-m", "ziplm", "eval", f"checkpoint={member}", "experiment=smoke",
               f"trainer={trainer}", f"output_root={out}"]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        (written,) = out.rglob("eval.json")
        results.append(json.loads(written.read_text())["results"])
    assert results[0] == results[1] and results[0]["validation"]
