"""`benchmarks/device_check.py --cpu-dry-run`: the prepared GPU check runs every section at tiny scale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_device_check_dry_run_writes_every_section(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    script = REPO / "benchmarks" / "device_check.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path), "--cpu-dry-run"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    report = json.loads((tmp_path / "device_check.json").read_text())
    sections = report["sections"]
    assert list(sections) == ["tables", "open_loop", "oneshot_family", "gradual_16_mixed"]
    failed = {name: entry.get("error") for name, entry in sections.items() if entry["status"] != "ok"}
    assert not failed and done.returncode == 0, (failed, done.stdout[-2000:], done.stderr[-2000:])
    tables = [t for t in sections["tables"]["result"].values() if "error" not in t]
    assert tables and all(t["environment"]["dtype"] == "bfloat16" and t["base_time_s"] > 0 for t in tables)
    picks = [row for rows in sections["open_loop"]["result"].values() for row in rows if "measured" in row]
    assert picks and all(row["predicted"] >= row["target"] * (1 - 1e-9) and row["measured"] > 0 for row in picks)
    for run in ("oneshot_family", "gradual_16_mixed"):
        result = sections[run]["result"]
        assert result["exit_code"] == 0 and result["members"], run
        assert {m["eval_precision"] for m in result["members"]} == {"bf16-mixed"} == {result["dense"]["eval_precision"]}


def test_device_check_refuses_a_machine_without_cuda_unless_dry(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        return
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "device_check.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "no CUDA device is visible" in done.stderr and "Traceback" not in done.stderr
