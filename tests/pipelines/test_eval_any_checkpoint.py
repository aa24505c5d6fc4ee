"""`ziplm eval` scores plain Hugging Face checkpoints (any AutoModelFor<task>) beside ziplm members, and
refuses one whose head cannot serve the task in one line, before any data is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

from ziplm.config.paths import compose
from ziplm.models.build import packaged_minilm_path
from ziplm.pipelines import evaluate as evaluate_module

SMALL = {"vocab_size": 30522, "max_position_embeddings": 128}


def _save(model: transformers.PreTrainedModel, folder: Path) -> Path:
    model.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(packaged_minilm_path()).save_pretrained(folder)
    return folder


def _distilbert(folder: Path, labels: int = 2) -> Path:
    config = transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=labels, **SMALL)
    return _save(transformers.DistilBertForSequenceClassification(config), folder)


def _bert(folder: Path, head: type = transformers.BertForSequenceClassification) -> Path:
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                                     num_labels=2, **SMALL)  # fmt: skip
    return _save(head(config), folder)


def _evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoint: Path | str) -> dict:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    monkeypatch.setattr(evaluate_module, "run_dir", lambda cfg: out)
    evaluate_module.run_evaluate(compose(["experiment=smoke", f"checkpoint={checkpoint}"], command="eval"))
    return json.loads((out / "eval.json").read_text())


@pytest.mark.parametrize("build", [_distilbert, _bert], ids=["distilbert", "bert-4-layers"])
def test_a_plain_checkpoint_is_scored_like_a_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build) -> None:  # type: ignore[no-untyped-def]
    folder = build(tmp_path / "baseline")
    record = _evaluate(tmp_path, monkeypatch, folder)
    assert record["kind"] == "plain checkpoint" and record["checkpoint"] == str(folder)
    assert 0.0 <= record["results"]["validation"]["accuracy"] <= 100.0
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder)
    assert record["parameters"] == sum(p.numel() for p in model.parameters())


def _unknown_architecture(folder: Path) -> Path:
    folder.mkdir()
    dims = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = transformers.CLIPVisionConfig(**dims)
    config.architectures = ["CLIPVisionForSequenceClassification"]
    config.save_pretrained(folder)
    return folder


BAD = [
    (lambda f: _bert(f, transformers.BertForQuestionAnswering), "needs \\*ForSequenceClassification"),
    (lambda f: _distilbert(f, labels=3), "classifies into 3 labels but the task has 2"),
    (lambda f: _bert(f, transformers.BertModel), "without a task head"),
    (_unknown_architecture, "has no AutoModelForSequenceClassification"),
]


@pytest.mark.parametrize(("build", "message"), BAD, ids=["qa-head", "labels", "no-head", "architecture"])
def test_a_checkpoint_that_cannot_serve_the_task_fails_before_any_data(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    build,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    def no_data(*_: object, **__: object) -> None:
        raise AssertionError("data was loaded for a checkpoint that cannot be scored")

    monkeypatch.setattr(evaluate_module, "load_splits", no_data)
    with pytest.raises(ValueError, match=message):
        _evaluate(tmp_path, monkeypatch, build(tmp_path / "bad"))


def test_the_cli_says_one_line_for_a_wrong_head_and_for_a_hub_id_offline(tmp_path: Path) -> None:
    folder = _bert(tmp_path / "qa", transformers.BertForQuestionAnswering)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    for checkpoint, message in ((folder, "needs *ForSequenceClassification"), ("someone/distilbert-sst2", "offline")):
        cmd = [sys.executable, "-m", "ziplm", "eval", f"checkpoint={checkpoint}", "experiment=smoke",
               f"output_root={tmp_path / 'out'}"]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], done.stderr
        assert "Traceback" not in done.stderr
