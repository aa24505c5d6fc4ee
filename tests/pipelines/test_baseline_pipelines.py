"""The Fisher mask and layer-dropping baselines through ``ziplm run`` on tiny models (seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipelines.test_prune_pipeline import _check_family, _run
from ziplm.core.database import LevelDatabase
from ziplm.models import load_pruned
from ziplm.pipelines import members, prune


def test_fisher_oneshot_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    _run(tmp_path, out, ["pruner.method=fisher"], monkeypatch)
    records = _check_family(out, [1.5, 2.0])
    assert all(r["method"] == "fisher" for r in records)
    manifest = LevelDatabase.read_manifest(out / "database")
    assert manifest["fingerprint"]["method"] == "fisher"
    # Fisher "errors" are summed importances: removing a whole FFN costs what all its neurons cost.
    ffn = manifest["layers"]["0"]["errors"]["ffn"]
    assert ffn["64"] == 0.0 and ffn["0"] == max(ffn.values()) and ffn["0"] != 1.0
    assert "fisher baseline oneshot" in (out / "results.md").read_text()


def test_layerdrop_family_distilled_and_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    # Two members: the second is cut from the teacher the first one's distillation froze (it must still train).
    overrides = ["pruner.method=layerdrop", "search.targets=[1.5,2.0]", "distill.epochs_per_stage=1"]
    calls: list[object] = []
    real_distill = members.distill_stage

    def spy(*args: object, **kwargs: object) -> None:
        calls.append(kwargs.get("layer_pairs"))
        real_distill(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(members, "distill_stage", spy)
    _run(tmp_path, out, overrides, monkeypatch)
    # Linear table: a layer costs 0.4 of T_base = 1, so one of two layers kept predicts 1/0.6, closest to
    # both 1.5x and 2x (none kept would be 5x): each member distilled once, its layer matched to its own.
    assert calls == [[(0, 0)], [(0, 0)]]
    record, second = _check_family(out, [1.5, 2.0], meets_targets=False)
    assert second["layers_kept"] == [0]
    assert record["method"] == "layerdrop" and record["layers_kept"] == [0]
    assert record["predicted_speedup"] == pytest.approx(1 / 0.6)
    assert record["heads_kept"] == [4, 0] and record["neurons_kept"] == [64, 0]
    dense = json.loads((out / "dense_metrics.json").read_text())
    model = load_pruned(out / "family" / "1.5x")
    per_layer = 4 * (32 * 32 + 32) + 2 * (32 * 64) + 64 + 32 + 2 * 2 * 32  # Q,K,V,O + FC1,FC2 + two LayerNorms
    assert record["parameters"] == dense["parameters"] - per_layer == sum(p.numel() for p in model.parameters())
    first = (out / "family" / "1.5x" / "metrics.json").stat().st_mtime_ns
    _run(tmp_path, out, overrides, monkeypatch)  # resume: nothing to redo
    assert (out / "family" / "1.5x" / "metrics.json").stat().st_mtime_ns == first and len(calls) == 2


def test_misspelt_method_fails_before_the_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_teacher(*_: object, **__: object) -> None:
        raise AssertionError("the teacher was trained despite bad input")

    monkeypatch.setattr(prune, "load_or_train_teacher", no_teacher)
    message = r"pruner\.method must be one of .*fisher-norescale, layerdrop, blockdrop, got 'fischer'"
    with pytest.raises(ValueError, match=message):
        _run(tmp_path, tmp_path / "run", ["pruner.method=fischer"], monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fisher-norescale", "layerdrop"])
def test_gpt2_baselines_gradual(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    out = tmp_path / "run"
    overrides = [
        "model=tiny-gpt2",
        "task=tiny-lm",
        "schedule=gradual",
        f"pruner.method={method}",
        "search.targets=[1.5]",
        "distill.epochs_per_stage=1",
        "pruner.calibration_samples=16",
        "search.spdy_random_starts=1",
        "search.spdy_local_steps=1",
        "task.max_train_samples=40",
        "task.max_eval_samples=8",
    ]
    _run(tmp_path, out, overrides, monkeypatch)
    record = json.loads((out / "family" / "1.5x" / "metrics.json").read_text())
    assert record["method"] == method and record["predicted_speedup"] >= 1.5
    assert 1.0 < record["metric/perplexity"] < 1e6
    assert load_pruned(out / "family" / "1.5x").config.model_type == "gpt2"
