"""`baselines:` in a run: published checkpoints (plain HF folders here, built from configs) are scored and
timed in the run's own harness, and reported as measured rows in results.md, metrics.jsonl and W&B; a
baseline that cannot serve the task stops the run in one line before any training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

from tests.report import wandb_records
from ziplm.config.baselines import for_task, parse_baselines
from ziplm.config.paths import task_options
from ziplm.models.build import packaged_minilm_path

SMALL = {"vocab_size": 30522, "max_position_embeddings": 128, "num_labels": 2}


def _save(model: transformers.PreTrainedModel, folder: Path) -> str:
    model.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(packaged_minilm_path()).save_pretrained(folder)
    return str(folder)


def _distilbert(folder: Path) -> str:
    config = transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **SMALL)
    return _save(transformers.DistilBertForSequenceClassification(config), folder)


def _bert(folder: Path, head: type = transformers.BertForSequenceClassification) -> str:
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                                     **SMALL)  # fmt: skip
    return _save(head(config), folder)


def _run(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    args = ["run", "experiment=smoke", "search.targets=[1.5]", "search.speedup_rounds=2", f"output_root={tmp_path}",
            *overrides]  # fmt: skip
    return subprocess.run([sys.executable, "-m", "ziplm", *args], env=env, capture_output=True, text=True, timeout=600)


def _baselines(*entries: tuple[str, str, str]) -> str:
    items = ", ".join(f"{{checkpoint: '{c}', label: {label}, citation: '{cite}'}}" for c, label, cite in entries)
    return f"baselines=[{items}]"


def test_baselines_are_measured_rows_beside_the_family(tmp_path: Path) -> None:
    distil, bert = _distilbert(tmp_path / "distil"), _bert(tmp_path / "bert4")
    entries = _baselines((distil, "distilbert-2l", "Sanh et al. 2019"), (bert, "bert-4l", "Turc et al. 2019"))
    done = _run(tmp_path, entries, "logger=wandb")
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "run" / "smoke").iterdir()
    records = {}
    for label, source in (("distilbert-2l", distil), ("bert-4l", bert)):
        record = json.loads((run / "baselines" / label / "metrics.json").read_text())
        assert record["method"] == "baseline" and record["checkpoint"] == source
        assert record["measured_speedup"] > 0 and 0 <= record["metric/accuracy"] <= 100
        records[label] = record
    model = transformers.AutoModelForSequenceClassification.from_pretrained(bert)
    assert records["bert-4l"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert records["bert-4l"]["encoder_parameters"] == sum(p.numel() for p in model.bert.encoder.parameters())
    assert records["distilbert-2l"].get("encoder_parameters") is None  # no ziplm adapter for DistilBERT
    report = (run / "results.md").read_text()
    assert "## Baselines measured here" in report
    assert "| distilbert-2l |" in report and "Turc et al. 2019" in report
    written = [json.loads(line)["member"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert written == ["dense", "1.5x", "distilbert-2l", "bert-4l"]
    _, rows = wandb_records.table(run, "results")
    assert [row[0] for row in rows] == written


BAD = [
    (lambda f: _bert(f, transformers.BertForQuestionAnswering), "needs *ForSequenceClassification"),
    (lambda f: _bert(f, transformers.BertModel), "without a task head"),
    (lambda f: "someone/tinybert-sst2", "offline"),
]


@pytest.mark.parametrize(("build", "message"), BAD, ids=["qa-head", "no-head", "hub-offline"])
def test_a_baseline_that_cannot_serve_the_task_fails_before_training(tmp_path: Path, build, message: str) -> None:  # type: ignore[no-untyped-def]
    done = _run(tmp_path, _baselines((build(tmp_path / "bad"), "bad", "")), f"cache_dir={tmp_path / 'cache'}")
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "baselines[0].checkpoint" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "cache" / "teachers").exists()  # nothing was trained


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"checkpoint": "a", "label": "2x"}], "not 'dense' or a member name"),
        ([{"checkpoint": "a", "label": "x"}, {"checkpoint": "b", "label": "x"}], "used twice"),
        ([{"label": "x"}], "checkpoint must be"),
        ([{"checkpoint": "a", "label": "x", "paper": "y"}], "unknown keys"),
        ("a", "must be a list"),
        ([{"checkpoint": "a", "label": "x", "task": "sst-2"}], "known tasks: .*sst2"),
        ([{"checkpoint": "a", "label": "x", "task": 2}], "task must name the task"),
    ],
)
def test_malformed_baseline_entries_are_refused(entries: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_baselines(entries, task_options())


def test_each_task_of_a_sweep_measures_its_own_baselines() -> None:
    entries = [
        {"checkpoint": "distilbert-sst2", "label": "distilbert", "task": "sst2"},
        {"checkpoint": "distilbert-mnli", "label": "distilbert", "task": "mnli"},  # one label per task is fine
        {"checkpoint": "any", "label": "anywhere"},
    ]
    parsed = parse_baselines(entries, task_options())
    assert [b.checkpoint for b in for_task(parsed, "mnli")] == ["distilbert-mnli", "any"]
    assert [b.checkpoint for b in for_task(parsed, "qqp")] == ["any"]
    with pytest.raises(ValueError, match="used twice"):
        parse_baselines([*entries, {"checkpoint": "b", "label": "distilbert"}], task_options())


def test_a_run_of_another_task_skips_a_task_bound_baseline(tmp_path: Path) -> None:
    """The preset's SST-2 DistilBERT (3 labels here: it could not serve tiny-cls) is not even checked."""
    config = transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **{**SMALL, "num_labels": 3})
    folder = _save(transformers.DistilBertForSequenceClassification(config), tmp_path / "sst2-only")
    entry = f"baselines=[{{checkpoint: '{folder}', label: distil, citation: '', task: sst2}}]"
    done = _run(tmp_path, entry, "logger=none")
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "run" / "smoke").iterdir()
    assert not (run / "baselines").exists()


def test_ziplm_report_lists_the_measured_baselines(tmp_path: Path) -> None:
    distil = _distilbert(tmp_path / "distil")
    assert _run(tmp_path, _baselines((distil, "distilbert-2l", "Sanh et al. 2019")), "logger=none").returncode == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "ziplm", "report", str(tmp_path / "run"), "logger=none", f"output_root={tmp_path}/o"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    sweep = (tmp_path / "run" / "sweep.md").read_text()
    assert "| baseline distilbert-2l | distilbert-2l |" in sweep
    csv = (tmp_path / "run" / "sweep.csv").read_text()
    assert "baseline distilbert-2l" in csv and "Sanh et al. 2019" in csv
