"""Block Influence (ShortGPT) and the blockdrop baseline: BI by hand, padding excluded, identity blocks
dropped first, kept layers in order, three families, and one real ``ziplm run``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.conftest import TINY_BERT, TINY_GPT2, token_batch
from tests.models.decoder_checks import tiny_model, tiny_spec
from ziplm.config.paths import REPO_ROOT, compose
from ziplm.config.validate import validate_config
from ziplm.core.latency import LatencyTable
from ziplm.latency.speedup import MeasuredSpeedup
from ziplm.models import adapter_for, build_model
from ziplm.pipelines import members, prune
from ziplm.pruning.block_importance import block_influence, influential_layers, live_layers, most_influential
from ziplm.pruning.layerdrop import drop_to_identity


def _model(family: str) -> nn.Module:
    """A tiny 3-layer model of `family`, in eval mode."""
    if family == "llama":
        return tiny_model(tiny_spec("llama", num_key_value_heads=2))
    return build_model(TINY_BERT if family == "bert" else TINY_GPT2, "base").eval()


def _batches() -> list[dict[str, torch.Tensor]]:
    ids, mask = token_batch()
    return [{"input_ids": ids, "attention_mask": mask}]


def _by_hand(model: nn.Module, batch: dict[str, torch.Tensor], layer: int) -> float:
    """1 − mean over real tokens of cos(hidden_states[i], hidden_states[i+1]) from the model's own outputs."""
    with torch.no_grad():
        states = model(**batch, output_hidden_states=True).hidden_states
    cos = torch.nn.functional.cosine_similarity(states[layer], states[layer + 1], dim=-1)
    return float(1 - cos[batch["attention_mask"].bool()].mean())


def _identity(model: nn.Module, layer: int) -> None:
    """Zero a pre-norm block's output projections (and biases): the block returns its input."""
    adapter = adapter_for(model)
    with torch.no_grad():
        for sublayer in ("attention", "ffn"):
            projection: Any = adapter.output_projection(model, layer, sublayer)
            projection.weight.zero_()
            if projection.bias is not None:
                projection.bias.zero_()


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_bi_equals_the_hidden_states_by_hand(family: str) -> None:
    model, batch = _model(family), _batches()[0]
    scores = block_influence(model, [batch])
    assert sorted(scores) == [0, 1, 2] and all(0 < s < 2 for s in scores.values())
    # Decoders' last hidden state has the final norm applied: compare the blocks before it.
    for layer in range(3 if family == "bert" else 2):
        assert scores[layer] == pytest.approx(_by_hand(model, batch, layer), abs=1e-6)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_padding_is_excluded(family: str) -> None:
    model, batch = _model(family), _batches()[0]
    before = block_influence(model, [batch])
    padded = batch["attention_mask"] == 0
    assert padded.any()
    other = {**batch, "input_ids": batch["input_ids"].masked_fill(padded, 7)}
    assert block_influence(model, [other]) == pytest.approx(before, abs=1e-6)
    # Without a mask the padded positions would count (and move BI).
    unmasked = block_influence(model, [{"input_ids": other["input_ids"]}])
    assert unmasked != pytest.approx(before, abs=1e-6)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_identity_block_has_zero_bi_and_is_dropped_first(family: str) -> None:
    model, batches = _model(family), _batches()
    _identity(model, 1)
    scores = block_influence(model, batches)
    assert scores[1] == pytest.approx(0.0, abs=1e-6) and min(scores[0], scores[2]) > 1e-3
    keep, recorded = influential_layers(model, batches, 2)
    assert keep == [0, 2] and recorded == [scores[0], scores[1], scores[2]]


def test_bert_dropped_layer_is_identity_and_not_scored_again() -> None:
    student, batches = drop_to_identity(_model("bert"), [0, 2]), _batches()
    assert block_influence(student, batches, [1])[1] == pytest.approx(0.0, abs=1e-6)
    assert live_layers(student) == [0, 2]
    keep, scores = influential_layers(student, batches, 1)  # only the live layers compete
    assert scores[1] is None and keep == [0 if scores[0] >= scores[2] else 2]  # type: ignore[operator]
    assert influential_layers(student, batches, 3)[0] == [0, 2]  # asked for more than are live: all


def test_most_influential_keeps_the_highest_in_layer_order() -> None:
    scores = {0: 0.30, 1: 0.05, 2: 0.50, 3: 0.05, 4: 0.20}
    assert most_influential(scores, 3) == [0, 2, 4]
    assert most_influential(scores, 4) == [0, 1, 2, 4]  # tie 1 vs 3: the earlier layer
    assert most_influential(scores, 1) == [2]
    with pytest.raises(ValueError, match=r"can keep 1\.\.5 of the 5 scored layers, not 0"):
        most_influential(scores, 0)


def test_bad_batches_fail_in_one_line() -> None:
    model, (ids, mask) = _model("bert"), token_batch()
    with pytest.raises(ValueError, match="needs calibration batches: got none"):
        block_influence(model, [])
    with pytest.raises(ValueError, match="every position is masked as padding"):
        block_influence(model, [{"input_ids": ids, "attention_mask": torch.zeros_like(mask)}])
    with pytest.raises(ValueError, match=r"layers \[5\] outside 0\.\.2"):
        block_influence(model, _batches(), [5])


def test_model_left_as_it_was() -> None:
    model = _model("gpt2").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    block_influence(model, _batches())
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(block._forward_hooks for block in adapter_for(model).layers(model))


def test_blockdrop_with_layerwise_calibration_fails_in_one_line() -> None:
    cfg = compose(["experiment=smoke", "pruner.method=blockdrop", "pruner.calibration=layerwise"])
    message = r"^pruner\.calibration must be whole with pruner\.method=blockdrop \(Block Influence .*\), got 'layerw"
    with pytest.raises(ValueError, match=message) as err:
        validate_config(cfg)
    assert "\n" not in str(err.value)


def test_blockdrop_run_records_kept_layers_and_bi(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    args = ["run", "experiment=smoke", "pruner.method=blockdrop", "search.targets=[1.5]", "search.speedup_rounds=2",
            f"output_root={tmp_path}", f"cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "ziplm", *args], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "run" / "smoke").iterdir()
    record = json.loads((run / "family" / "1.5x" / "metrics.json").read_text())
    assert record["method"] == "blockdrop" and len(record["block_influence"]) == 2  # smoke: a 2-layer BERT
    keep, scores = record["layers_kept"], record["block_influence"]
    assert keep == most_influential(dict(enumerate(scores)), len(keep))
    assert record["heads_kept"] == [4 if i in keep else 0 for i in range(2)]
    results = (run / "results.md").read_text()
    assert "blockdrop baseline oneshot" in results and "of highest Block Influence" in results


def _three_layer_table(model: object, env: object, heads: list[int], ffn: list[int], cache_dir: str, *_: object):
    """A fixed table for a 3-layer model: a layer costs 0.4 of T_base = 1.6, so 2 layers kept ≈ 1.33x, 1 = 2x."""
    table = LatencyTable({"fake": True}, 1.6, {k: 0.1 * k / max(heads) for k in heads},
                         {m: 0.3 * m / max(ffn) for m in ffn})  # fmt: skip
    path = Path(cache_dir) / "latency" / "three.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.save(path)
    return table, path, False


def test_gradual_blockdrop_scores_the_shortened_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    monkeypatch.setattr(prune, "run_dir", lambda cfg: out.mkdir(parents=True, exist_ok=True) or out)
    monkeypatch.setattr(prune, "load_or_measure", _three_layer_table)
    monkeypatch.setattr(members, "timed_speedups", lambda _, models, *__: [MeasuredSpeedup(2, 2, 2, 5)] * len(models))
    monkeypatch.setattr(members, "noise_floor", lambda *_: MeasuredSpeedup(1.0, 0.995, 1.005, 5))
    overrides = ["experiment=smoke", "logger=none", "schedule=gradual", "model.num_layers=3", "pruner.method=blockdrop",
                 "pruner.calibration_samples=32", "search.targets=[1.3,2.0]", "distill.epochs_per_stage=0",
                 f"output_root={tmp_path}", f"cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    prune.run_prune(compose(overrides))
    first, second = (json.loads((out / "family" / t / "metrics.json").read_text()) for t in ("1.3x", "2x"))
    assert len(first["layers_kept"]) == 2 and all(bi is not None for bi in first["block_influence"])
    (gone,) = set(range(3)) - set(first["layers_kept"])
    assert first["block_influence"][gone] == min(first["block_influence"])
    # Stage two scores the stage-one member: its dropped layer is not scored again, one of its two is kept.
    assert second["block_influence"][gone] is None and set(second["layers_kept"]) < set(first["layers_kept"])
    live = {i: bi for i, bi in enumerate(second["block_influence"]) if bi is not None}
    assert second["layers_kept"] == most_influential(live, 1)
    assert second["predicted_speedup"] == pytest.approx(2.0)
    assert "of highest Block Influence (per layer:" in (out / "results.md").read_text()
