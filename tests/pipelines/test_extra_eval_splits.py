"""A task's further evaluation splits (MNLI's validation_mismatched) are scored for the dense model and every
member by `ziplm run`, next to the headline split."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path


def _csv(path: Path, rows: int, seed: int) -> str:
    rng = random.Random(seed)
    words = ["good", "bad", "fine", "awful", "great", "poor"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for _ in range(rows):
            label = rng.randint(0, 1)
            writer.writerow([" ".join(rng.choice(words[label::2]) for _ in range(6)), label])
    return str(path)


def test_mismatched_split_is_scored_for_dense_and_members(tmp_path: Path) -> None:
    files = {split: _csv(tmp_path / f"{split}.csv", rows, seed) for split, rows, seed in
             (("train", 64, 0), ("validation", 24, 1), ("validation_mismatched", 20, 2))}  # fmt: skip
    data_files = f"{{train: {files['train']}, validation: {files['validation']}}}"
    args = ["run", "experiment=smoke", "search.targets=[1.5]", "search.speedup_rounds=2", f"output_root={tmp_path}",
            f"task.data_files={data_files}", f"+task.data_files.validation_mismatched={files['validation_mismatched']}",
            "task.extra_eval_splits=[validation_mismatched]"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    done = subprocess.run([sys.executable, "-m", "ziplm", *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "run" / "smoke").iterdir()
    for path in (run / "dense_metrics.json", run / "family" / "1.5x" / "metrics.json"):
        record = json.loads(path.read_text())
        assert 0 <= record["metric/accuracy"] <= 100
        assert 0 <= record["metric/validation_mismatched/accuracy"] <= 100, record
