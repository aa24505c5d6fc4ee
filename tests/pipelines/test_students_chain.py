"""The offline side-by-side comparison as a user runs it, through the real CLI and the real presets (shrunk):
`minilm-bbc-students` makes layer-drop students, `ziplm export … export.formats=[transformers]` turns them
into stock Hugging Face folders, and `minilm-bbc-vs-students` measures them as baselines beside the ZipLM
family — in results.md, `ziplm report` and the W&B offline run (read back from its log)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

from tests.report import wandb_records

# The presets' model and task, shrunk: a 4-layer tiny BERT (so whole layers can go) on 64 BBC News articles.
SHRINK = [
    "model=tiny-bert", "model.num_layers=4", "task.max_train_samples=64", "task.max_eval_samples=32",
    "task.max_seq_length=32", "teacher.epochs=1", "pruner.calibration_samples=16", "search.spdy_random_starts=1",
    "search.spdy_local_steps=1", "search.spdy_loss_samples=16", "search.speedup_rounds=2", "hardware.warmup=1",
    "hardware.repetitions=3", "hardware.max_seconds_per_entry=1", "trainer.batch_size=16",
    "distill.epochs_per_stage=0.5",
]  # fmt: skip


def _ziplm(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "ziplm", *args, f"output_root={tmp_path}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_students_are_exported_plain_and_measured_beside_the_family(tmp_path: Path) -> None:
    _ziplm(tmp_path, "run", "experiment=minilm-bbc-students", *SHRINK, "logger=none")
    students = tmp_path / "students"
    for target in ("1.5x", "2x"):
        member = students / "minilm-bbc" / "family" / target
        output = f"export.output={students}/minilm-bbc-{target}"
        _ziplm(tmp_path, "export", f"checkpoint={member}", "export.formats=[transformers]", output)
        plain = students / f"minilm-bbc-{target}" / "transformers"
        config = transformers.AutoConfig.from_pretrained(plain)
        kept = json.loads((member / "metrics.json").read_text())["layers_kept"]
        assert config.num_hidden_layers == len(kept) < 4 and not (plain / "ziplm.json").exists()

    _ziplm(tmp_path, "run", "experiment=minilm-bbc-vs-students", *SHRINK, "logger=wandb")
    (run,) = (tmp_path / "run" / "minilm-bbc-vs-students").iterdir()
    labels = ["minilm-student-1.5x", "minilm-student-2x"]
    for label in labels:
        record = json.loads((run / "baselines" / label / "metrics.json").read_text())
        assert record["method"] == "baseline" and record["measured_speedup"] > 1.0
        assert record["encoder_parameters"] > 0  # a stock BERT: ziplm counts its encoder
    report = (run / "results.md").read_text()
    assert "## Baselines measured here" in report and all(f"| {label} |" in report for label in labels)
    columns, rows = wandb_records.table(run, "results")
    assert [row[0] for row in rows] == ["dense", "1.5x", "2x", *labels]
    assert all(isinstance(row[columns.index("measured_speedup")], float) for row in rows)
    log = wandb_records.run_log(run)
    config = wandb_records.config(log)
    assert [b["label"] for b in config["baselines"]] == labels
    assert "pareto_table/_type" in wandb_records.history_keys(log)  # the native chart
    assert wandb_records.artifacts(log)["member-tiny-bert-bbc-news-2x"][0] == "model"

    _ziplm(tmp_path, "report", str(tmp_path / "run" / "minilm-bbc-vs-students"), "logger=none")
    sweep = (tmp_path / "run" / "minilm-bbc-vs-students" / "sweep.md").read_text()
    assert all(f"| baseline {label} | {label} |" in sweep for label in labels)
