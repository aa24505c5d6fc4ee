"""Members are saved in a declared dtype, recorded in ziplm.json, and reload bit for bit in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_BERT
from ziplm.core.structure import Structure
from ziplm.models import adapter_for, build_model, load_pruned, save_pruned


def _pruned() -> torch.nn.Module:
    model = build_model(TINY_BERT, "classification", num_labels=2)
    dims = adapter_for(model).dims(model)
    structure = Structure.from_kept(dims, [[0, 2]] * dims.num_layers, [range(40)] * dims.num_layers)
    adapter_for(model).apply_structure(model, structure)
    return model


@pytest.mark.parametrize("dtype", [None, "float32", "bfloat16", "float16"])
def test_saved_dtype_is_recorded_and_reloads_bit_for_bit(tmp_path: Path, dtype: str | None) -> None:
    model = _pruned()
    structure = Structure.from_dict(model.config.ziplm_structure)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folder = save_pruned(model, structure, tmp_path / "m", dtype=dtype)
    wanted = getattr(torch, dtype or "float32")
    assert json.loads((folder / "ziplm.json").read_text())["dtype"] == str(wanted).removeprefix("torch.")
    # The caller's model is not cast by saving.
    assert all(torch.equal(v, before[k]) and v.dtype == before[k].dtype for k, v in model.state_dict().items())
    reloaded = load_pruned(folder)
    for name, tensor in reloaded.state_dict().items():
        expected = before[name].to(wanted) if before[name].is_floating_point() else before[name]
        assert tensor.dtype == expected.dtype and torch.equal(tensor, expected), name
    # An explicit dtype on load overrides the recorded one.
    assert all(p.dtype == torch.float32 for p in load_pruned(folder, dtype="float32").parameters())


def test_folders_from_before_the_dtype_was_recorded_load_as_float32(tmp_path: Path) -> None:
    model = _pruned()
    folder = save_pruned(model, Structure.from_dict(model.config.ziplm_structure), tmp_path / "m")
    manifest = json.loads((folder / "ziplm.json").read_text())
    del manifest["dtype"]
    (folder / "ziplm.json").write_text(json.dumps(manifest))
    assert all(p.dtype == torch.float32 for p in load_pruned(folder).parameters())


def test_unknown_dtypes_are_refused(tmp_path: Path) -> None:
    model = _pruned()
    structure = Structure.from_dict(model.config.ziplm_structure)
    with pytest.raises(ValueError, match="unknown save dtype 'float8'"):
        save_pruned(model, structure, tmp_path / "m", dtype="float8")
    folder = save_pruned(model, structure, tmp_path / "m")
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        load_pruned(folder, dtype="int4")


def test_encoder_parameters_are_the_layers_alone() -> None:
    """The paper's size: Transformer layers only; embeddings and the task head are left out."""
    from ziplm.models.io import count_encoder_parameters

    model = build_model(TINY_BERT, "classification", num_labels=2)
    hidden, ffn, layers = TINY_BERT.hidden_size or 0, TINY_BERT.intermediate_size or 0, TINY_BERT.num_layers or 0
    per_layer = 4 * (hidden * hidden + hidden) + (hidden * ffn + ffn) + (ffn * hidden + hidden) + 2 * 2 * hidden
    assert count_encoder_parameters(model) == layers * per_layer
    embeddings = sum(p.numel() for p in model.bert.embeddings.parameters())
    head = sum(
        p.numel() for n, p in model.named_parameters() if not n.startswith("bert.encoder") and "embeddings" not in n
    )
    assert count_encoder_parameters(model) + embeddings + head == sum(p.numel() for p in model.parameters())
