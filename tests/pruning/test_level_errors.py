"""A level's stored error is its relative output error, recomputed here by explicit forward passes.

For one output projection (attention out-proj, FFN FC2) with dense weight W, bias b and inputs x (the
non-padding calibration tokens), a level keeping units `ids` with updated columns Ŵ stores

    e = Σ_x ‖Ŵ x[kept cols] + b − (W x + b)‖² / Σ_x ‖W x + b‖²

(`ziplm.pruning.database_builder._sublayer_entries`, denominator from `ziplm.pruning.capture`). Here x
and W x + b come from hooks on the real module in a plain forward pass, and Ŵ x is computed by hand from
the stored ids and weights, so neither the Hessian nor the OBS loss bookkeeping nor `stitch` is trusted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import TINY_BERT, TINY_GPT2, token_batch
from ziplm.core.database import LevelDatabase
from ziplm.models import adapter_for, build_model, get_output_weight
from ziplm.models.adapter import Sublayer
from ziplm.models.build import ModelSpec
from ziplm.pruning.database_builder import build_database


def _batches() -> list[dict[str, torch.Tensor]]:
    out = []
    for pad_from in (None, 9, 5):  # padding on some rows: those tokens must not count
        ids, mask = token_batch(batch=4, seq=16, pad_from=pad_from)
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def _projection_io(
    model: nn.Module,
    layer: int,
    sublayer: Sublayer,
    batches: list[dict[str, torch.Tensor]],
    drop_padding: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs x, outputs W x + b) of one output projection over the non-padding calibration tokens."""
    module = adapter_for(model).output_projection(model, layer, sublayer)
    assert module is not None
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []

    def hook(_: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        inputs.append(args[0].detach().reshape(-1, args[0].shape[-1]))
        outputs.append(out.detach().reshape(-1, out.shape[-1]))

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for batch in batches:
                model(**batch)
    finally:
        handle.remove()
    real = torch.cat([b["attention_mask"].reshape(-1) for b in batches]).bool()
    if not drop_padding:
        real = torch.ones_like(real)
    return torch.cat(inputs)[real].double(), torch.cat(outputs)[real].double()


def _forward_error(
    model: nn.Module, db: LevelDatabase, layer: int, sublayer: Sublayer, keep: int, x: torch.Tensor, y: torch.Tensor
) -> float:
    dims = adapter_for(model).dims(model)
    width = dims.head_dim if sublayer == "attention" else 1
    entry = db.entry(layer, sublayer, keep)
    assert entry.ids.numel() == keep and entry.weight.shape == (dims.hidden_size, keep * width)
    cols = (entry.ids[:, None] * width + torch.arange(width)).reshape(-1)
    bias = adapter_for(model).output_projection(model, layer, sublayer).bias.detach().double()
    pruned = x[:, cols] @ entry.weight.double().T + bias
    return float((pruned - y).pow(2).sum() / y.pow(2).sum())


def _model(spec: ModelSpec) -> nn.Module:
    model = build_model(spec, "lm" if spec.family == "gpt2" else "base", initializer_range=0.2).eval()
    with torch.no_grad():  # non-zero biases: the denominator is ‖W x + b‖², not ‖W x‖²
        for i in range(adapter_for(model).dims(model).num_layers):
            for sublayer in ("attention", "ffn"):
                adapter_for(model).output_projection(model, i, sublayer).bias.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize("spec", [TINY_BERT, TINY_GPT2])
def test_attention_level_errors_equal_a_forward_pass(tmp_path: Path, spec: ModelSpec) -> None:
    model, batches = _model(spec), _batches()
    db = build_database(model, batches, tmp_path / "db", show_progress=False)
    dims = adapter_for(model).dims(model)
    checked = 0
    for layer in range(dims.num_layers):
        x, y = _projection_io(model, layer, "attention", batches)
        # The hooks see what the database saw: y is really W x + b of the dense weights.
        w = get_output_weight(adapter_for(model), model, layer, "attention").double()
        bias = adapter_for(model).output_projection(model, layer, "attention").bias.detach().double()
        torch.testing.assert_close(y, x @ w.T + bias, atol=1e-5, rtol=1e-5)
        errors = db.errors(layer, "attention")
        for keep in sorted(k for k in errors if 0 < k < dims.num_heads):
            measured = _forward_error(model, db, layer, "attention", keep, x, y)
            assert 0.0 < measured < 1.0
            assert errors[keep] == pytest.approx(measured, rel=1e-4), (layer, keep)
            checked += 1
        assert errors[dims.num_heads] == pytest.approx(0.0, abs=1e-9)
        assert _forward_error(model, db, layer, "attention", dims.num_heads, x, y) == pytest.approx(0.0, abs=1e-9)
    assert checked >= dims.num_layers * (dims.num_heads - 1)


@pytest.mark.parametrize("spec", [TINY_BERT, TINY_GPT2])
def test_ffn_level_error_equals_a_forward_pass(tmp_path: Path, spec: ModelSpec) -> None:
    model, batches = _model(spec), _batches()
    db = build_database(model, batches, tmp_path / "db", show_progress=False)
    layer = 1
    x, y = _projection_io(model, layer, "ffn", batches)
    errors = db.errors(layer, "ffn")
    inner = sorted(k for k in errors if 0 < k < adapter_for(model).dims(model).intermediate_size)
    for keep in (inner[0], inner[len(inner) // 2], inner[-1]):
        measured = _forward_error(model, db, layer, "ffn", keep, x, y)
        assert 0.0 < measured < 1.0
        assert errors[keep] == pytest.approx(measured, rel=1e-4), keep


def test_padding_tokens_are_not_part_of_the_error(tmp_path: Path) -> None:
    """With the padding tokens counted, the recomputed error differs: the checks above can tell them apart."""
    model, batches = _model(TINY_BERT), _batches()
    db = build_database(model, batches, tmp_path / "db", show_progress=False)
    x, y = _projection_io(model, 0, "attention", batches)
    x_all, y_all = _projection_io(model, 0, "attention", batches, drop_padding=False)
    assert x_all.shape[0] > x.shape[0]
    stored = db.errors(0, "attention")[2]
    assert stored == pytest.approx(_forward_error(model, db, 0, "attention", 2, x, y), rel=1e-4)
    assert stored != pytest.approx(_forward_error(model, db, 0, "attention", 2, x_all, y_all), rel=1e-3)
