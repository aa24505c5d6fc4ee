"""``ziplm eval``: a saved member is evaluated offline; bad checkpoints are refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ziplm.config.paths import compose
from ziplm.core.structure import Structure
from ziplm.models import ModelSpec, adapter_for, build_model, build_tokenizer, save_pruned
from ziplm.pipelines import evaluate as evaluate_module


def test_eval_of_a_saved_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ModelSpec(
        name="t",
        family="bert",
        source="scratch",
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        vocab_size=30522,
        max_position_embeddings=128,
        tokenizer="packaged:minilm",
    )
    model = build_model(spec, "classification", num_labels=2)
    dims = adapter_for(model).dims(model)
    structure = Structure.from_kept(dims, [[0, 1], []], [range(32), range(64)])
    adapter_for(model).apply_structure(model, structure)
    folder = save_pruned(model, structure, tmp_path / "member", tokenizer=build_tokenizer(spec))
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(evaluate_module, "run_dir", lambda cfg: out)
    evaluate_module.run_evaluate(compose(["experiment=smoke", f"checkpoint={folder}"], command="eval"))
    record = json.loads((out / "eval.json").read_text())
    assert 0.0 <= record["results"]["validation"]["accuracy"] <= 100.0


def test_eval_refuses_a_folder_that_is_no_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"neither a ziplm family member .* nor a Hugging Face model folder"):
        evaluate_module.run_evaluate(compose(["experiment=smoke", f"checkpoint={tmp_path}"], command="eval"))
    with pytest.raises(ValueError, match="needs checkpoint="):
        evaluate_module.run_evaluate(compose(["experiment=smoke"], command="eval"))
