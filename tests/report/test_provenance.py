"""Every run records how it was made (commit, versions, command, machine), in its folder, its report and
its W&B run config (read back from what an offline W&B run wrote)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.report import wandb_records
from ziplm.report.provenance import PROVENANCE_FILE, provenance, provenance_line

REPO = Path(__file__).resolve().parents[2]


def test_provenance_names_the_checked_out_commit_and_the_command() -> None:
    record = provenance(["run", "experiment=smoke"])
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    assert record["commit"] == head.stdout.strip()
    assert isinstance(record["dirty"], bool)
    assert record["command"] == "ziplm run experiment=smoke"
    assert record["versions"]["torch"] and record["versions"]["ziplm"]
    assert record["machine"]["cpus"] == os.cpu_count()
    line = provenance_line(record)
    assert record["commit"][:12] in line and "ziplm run experiment=smoke" in line
    assert provenance_line(None).startswith("made by: unknown")


def test_a_run_records_its_provenance_in_folder_report_and_wandb(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    args = ["run", "experiment=smoke", "logger=wandb", "search.targets=[1.5]", "search.speedup_rounds=2",
            f"output_root={tmp_path}"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "ziplm", *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "run" / "smoke").iterdir()
    record = json.loads((run / PROVENANCE_FILE).read_text())
    assert record["command"] == shlex.join(["ziplm", *args])  # quoted as a shell would need it
    assert provenance_line(record) in (run / "results.md").read_text()
    log = wandb_records.run_log(run)  # what `wandb sync` would upload
    config = wandb_records.config(log)
    assert config["provenance"]["commit"] == record["commit"] and config["provenance"]["command"] == record["command"]
    assert config["pruner"]["method"] == "obs" and config["search"]["targets"] == [1.5]
    keys = wandb_records.history_keys(log)
    assert {"family/metric/accuracy", "family/measured_speedup", "family/member_index"} <= keys
    assert {"results/_type", "pareto_table/_type"} <= keys, sorted(keys)  # a numeric table and a native chart
    columns, rows = wandb_records.table(run, "results")
    assert columns[:4] == ["member", "target_speedup", "predicted_speedup", "measured_speedup"]
    assert [row[0] for row in rows] == ["dense", "1.5x"] and all(isinstance(v, float) for v in rows[1][1:4])
    logged = wandb_records.artifacts(log)  # lineage: teacher -> database -> member, table by model x environment
    assert logged["latency-tiny-bert-cpu"][0] == "latency-table"
    assert logged["teacher-tiny-bert-tiny-cls"][0] == "teacher"
    assert logged["database-tiny-bert-tiny-cls"][0] == "levels-database"
    kind, metadata = logged["member-tiny-bert-tiny-cls-1.5x"]
    assert kind == "model" and metadata["teacher"] == "teacher-tiny-bert-tiny-cls"
    assert metadata["database"] == "database-tiny-bert-tiny-cls" and metadata["member"] == "1.5x"
    encoder = columns.index("encoder_parameters")
    assert 0 < rows[1][encoder] <= rows[0][encoder] < rows[0][columns.index("parameters")]


def test_each_training_stage_logs_its_own_curves(tmp_path: Path) -> None:
    """Every stage's fresh Trainer counts from step 0: the teacher's and each stage's metrics get their own
    names, so W&B draws them apart instead of on top of each other."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    args = ["run", "experiment=smoke", "logger=wandb", "schedule=gradual", "search.targets=[1.5,2]",
            "distill.epochs_per_stage=0.5", "search.speedup_rounds=2", f"output_root={tmp_path}"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "ziplm", *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "run" / "smoke").iterdir()
    keys = wandb_records.history_keys(wandb_records.run_log(run))
    assert {"teacher-train/loss", "stage_1.5x-train/loss", "stage_2x-train/loss"} <= keys, sorted(keys)
    assert "train/loss" not in keys
