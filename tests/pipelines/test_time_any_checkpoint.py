"""`ziplm latency checkpoint=…` and `ziplm serve-bench checkpoint=…` time any checkpoint — plain HF folders of
architectures ziplm has no adapter for (DistilBERT), a member, a Hub id — in the run's environment, through
the real CLI; bad sources fail in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import transformers
from torch import nn

from ziplm.core.structure import Structure
from ziplm.models import adapter_for, build_model
from ziplm.models.build import ModelSpec
from ziplm.models.io import save_pruned

SMALL = {"vocab_size": 30522, "max_position_embeddings": 128}
# experiment=smoke times tiny-bert (2 layers, 32 wide) at batch 32 x seq 64; fewer rounds keep this quick.
FAST = ["experiment=smoke", "search.speedup_rounds=3", "hardware.repetitions=3"]


def _distilbert(folder: Path) -> Path:
    config = transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=2, **SMALL)
    transformers.DistilBertForSequenceClassification(config).save_pretrained(folder)
    return folder


def _wide_bert(folder: Path, layers: int) -> Path:
    """Much more work per call than tiny-bert (256 wide, FFN 1024): its time is dominated by its layers."""
    config = transformers.BertConfig(hidden_size=256, num_hidden_layers=layers, num_attention_heads=4,
                                     intermediate_size=1024, num_labels=3, **SMALL)  # fmt: skip
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def _member(folder: Path) -> tuple[Path, nn.Module]:
    spec = ModelSpec(name="t", family="bert", source="scratch", hidden_size=32, num_layers=2, num_heads=4,
                     intermediate_size=64, **SMALL)  # fmt: skip
    model = build_model(spec, "classification", num_labels=2)
    dims = adapter_for(model).dims(model)
    structure = Structure.from_kept(dims, [[0, 1], []], [range(32), range(64)])
    adapter_for(model).apply_structure(model, structure)
    return save_pruned(model, structure, folder), model


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "ziplm", *args, f"output_root={tmp_path / 'out'}"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _record(tmp_path: Path, name: str) -> dict:
    (path,) = (tmp_path / "out").rglob(name)
    return json.loads(path.read_text())


def test_latency_times_plain_checkpoints_and_a_member_against_the_configured_model(tmp_path: Path) -> None:
    distil = _distilbert(tmp_path / "distilbert")
    deep, shallow = _wide_bert(tmp_path / "bert-4", 4), _wide_bert(tmp_path / "bert-1", 1)
    member, model = _member(tmp_path / "family" / "2x")
    done = _cli(tmp_path, "latency", *FAST, f"checkpoint=[{distil},{deep},{shallow},{member}]")
    assert done.returncode == 0, done.stderr
    record = _record(tmp_path, "latency_compare.json")
    rows = {row["model"]: row for row in record["rows"]}
    assert list(rows) == ["dense tiny-bert", "distilbert", "bert-4", "bert-1", "family/2x"]
    assert rows["dense tiny-bert"]["speedup"] == 1.0 and rows["dense tiny-bert"]["kind"] == "dense"
    assert [rows[n]["kind"] for n in ("distilbert", "bert-4", "family/2x")] == ["plain", "plain", "ziplm member"]
    plain = transformers.AutoModelForSequenceClassification.from_pretrained(distil)
    assert rows["distilbert"]["parameters"] == sum(p.numel() for p in plain.parameters())
    assert rows["distilbert"]["encoder_parameters"] is None  # no ziplm adapter: totals only, not a guess
    assert rows["family/2x"]["parameters"] == sum(p.numel() for p in model.parameters())
    # One quarter of the layers of a layer-bound model: clearly faster, timed in the same rounds.
    assert rows["bert-1"]["speedup"] > 1.8 * rows["bert-4"]["speedup"]
    assert record["environment"]["batch_size"] == 32 and record["environment"]["seq_length"] == 64
    assert (tmp_path / "out").rglob("provenance.json")
    table = next((tmp_path / "out").rglob("latency_compare.md")).read_text()
    assert "| distilbert | plain |" in table and "batch 32 x seq 64" in table


def test_serve_bench_serves_a_plain_checkpoint_against_the_configured_model(tmp_path: Path) -> None:
    distil = _distilbert(tmp_path / "distilbert")
    serve = ["serve.requests=4", "serve.concurrency=2", "serve.warmup=1", "serve.seq_length=16", "serve.rounds=2"]
    done = _cli(tmp_path, "serve-bench", "experiment=smoke", f"checkpoint={distil}", *serve)
    assert done.returncode == 0, done.stderr
    record = _record(tmp_path, "serve_bench.json")
    assert record["checkpoint"] == str(distil) and "model=tiny-bert" in record["baseline"]
    assert [r["name"] for r in record["results"]] == ["dense", "distilbert"]


BAD = [
    ("latency", "checkpoint=[]", "needs checkpoint="),
    ("latency", "checkpoint=someone/distilbert-sst2", "offline"),
    ("latency", "checkpoint={tmp}/nope", "no such folder"),
    ("latency", "checkpoint={tmp}", "neither a ziplm family member"),
    ("latency", "checkpoint={tmp}/long", "(32 positions); set hardware.seq_length <= 32"),
    ("serve-bench", "checkpoint=[{tmp}/long,{tmp}/long]", "one checkpoint at a time"),
    ("serve-bench", "serve.baseline=someone/bert-base", "offline"),
]


@pytest.mark.parametrize(("command", "override", "message"), BAD)
def test_bad_sources_fail_in_one_line(tmp_path: Path, command: str, override: str, message: str) -> None:
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                     vocab_size=30522, max_position_embeddings=32)  # fmt: skip
    transformers.BertForSequenceClassification(config).save_pretrained(tmp_path / "long")
    args = [override.format(tmp=tmp_path)]
    if "serve.baseline" in override:
        args.append(f"checkpoint={tmp_path / 'long'}")
    done = _cli(tmp_path, command, *FAST, *args)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr
