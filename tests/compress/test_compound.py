"""Compound compression of structurally pruned tiny BERT / GPT-2: sparsity, skipped sublayers, INT8."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.conftest import TINY_BERT, TINY_GPT2, token_batch
from ziplm.compress import CompressionSettings, compress, layer_matrices, load_int8, sparsity_report
from ziplm.core.hessian import capture_hessians
from ziplm.core.structure import Structure
from ziplm.core.unstructured import obs_unstructured
from ziplm.models import ModelSpec, adapter_for, build_model
from ziplm.models.adapter import assign_linear_weight, unwrap_linear_weight

SPECS = {"bert": TINY_BERT, "gpt2": TINY_GPT2}
# Uneven shapes: layer 1 loses its attention, layer 2 its FFN; head and neuron counts differ per layer.
HEADS = [[0, 2, 3], [], [1]]
NEURONS = [list(range(0, 64, 3)), list(range(17)), []]
EXPECTED_REMOVED = {1: "attention", 2: "ffn"}


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """Tiny models: waking a second intra-op thread per op costs more than the op (4-5x slower on 2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pruned(spec: ModelSpec) -> nn.Module:
    head = "classification" if spec.family == "bert" else "lm"
    model = build_model(spec, head, **({"num_labels": 3} if head == "classification" else {})).eval()
    adapter = adapter_for(model)
    adapter.apply_structure(model, Structure.from_kept(adapter.dims(model), HEADS, NEURONS))
    return model


def _batches(n: int = 3) -> list[dict[str, torch.Tensor]]:
    batches = []
    for _ in range(n):
        ids, mask = token_batch(batch=4, seq=16, pad_from=10)
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


def _outputs(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(**b).logits for b in batches])


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("family", ["bert", "gpt2"])
@pytest.mark.parametrize("method", ["obs", "magnitude"])
def test_every_matrix_reaches_the_sparsity_and_removed_sublayers_are_skipped(family: str, method: str) -> None:
    model = _pruned(SPECS[family])
    before = _state(model)
    out = compress(model, _batches(), CompressionSettings(unstructured=method, sparsity=0.5, block_size=8))
    for key, value in model.state_dict().items():  # the input model is untouched
        assert torch.equal(value, before[key]), key
    blocks = adapter_for(out).layers(out)
    names = []
    for i, block in enumerate(blocks):
        for name, module in layer_matrices(block).items():
            weight = unwrap_linear_weight(module)
            assert ((weight == 0).sum(dim=1) == round(0.5 * weight.shape[1])).all(), (i, name)
            names.append(f"layer.{i}.{name}")
    report = sparsity_report(out)
    assert sorted(report.matrices) == sorted(names)
    assert all(f == pytest.approx(0.5, abs=0.03) for f in report.matrices.values())
    assert report.overall == pytest.approx(0.5, abs=0.02)
    # 6 matrices per full layer (GPT-2: fused QKV + out + 2 FFN = 4); layers 1 and 2 lose one sublayer each.
    per_attention, per_ffn = (4, 2) if family == "bert" else (2, 2)
    assert len(names) == 3 * (per_attention + per_ffn) - per_attention - per_ffn
    attention_words = ("attention", "attn")
    assert not [n for n in names if n.startswith("layer.1.") and any(w in n for w in attention_words)]
    assert not [n for n in names if n.startswith("layer.2.") and not any(w in n for w in attention_words)]


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_obs_is_sequential_and_matches_a_layer_by_layer_reference(family: str) -> None:
    """Block l's Hessians come from the model with blocks < l already pruned, padding excluded."""
    model, batches = _pruned(SPECS[family]), _batches()
    out = compress(model, batches, CompressionSettings(unstructured="obs", sparsity=0.4, damp=0.05, block_size=8))
    reference = _pruned(SPECS[family])
    reference.load_state_dict(model.state_dict())
    for block in adapter_for(reference).layers(reference):
        matrices = layer_matrices(block)

        def run(token_mask: Any) -> None:
            for batch in batches:
                token_mask.set(batch["attention_mask"])
                reference(**batch)

        hessians = capture_hessians(matrices, run)
        for name, module in matrices.items():
            assign_linear_weight(module, obs_unstructured(unwrap_linear_weight(module), hessians[name], 0.4, 0.05, 8))
    torch.testing.assert_close(_outputs(out, batches), _outputs(reference, batches))


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_obs_keeps_outputs_closer_than_magnitude(family: str) -> None:
    model, batches = _pruned(SPECS[family]), _batches()
    dense = _outputs(model, batches)
    errors = {}
    for method in ("obs", "magnitude"):
        out = compress(model, batches, CompressionSettings(unstructured=method, sparsity=0.5, block_size=8))
        errors[method] = float((_outputs(out, batches) - dense).pow(2).sum())
    assert errors["obs"] < errors["magnitude"], errors  # random tiny models: no strong margin to expect


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_int8_is_close_to_float_and_quantizes_every_linear(family: str) -> None:
    model, batches = _pruned(SPECS[family]), _batches()
    out = compress(model, [], CompressionSettings(int8=True))
    leftovers = [n for n, m in out.named_modules() if type(m) in (nn.Linear,) or type(m).__name__ == "Conv1D"]
    assert leftovers == []
    dense, quantized = _outputs(model, batches), _outputs(out, batches)
    relative = float((quantized - dense).norm() / dense.norm())
    assert relative < 0.05, relative


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_obs_then_int8_composes_and_keeps_the_zeros(family: str, tmp_path: Path) -> None:
    model, batches = _pruned(SPECS[family]), _batches()
    settings = CompressionSettings(unstructured="obs", sparsity=0.5, int8=True, block_size=8)
    out = compress(model, batches, settings)
    float_only = compress(model, batches, CompressionSettings(unstructured="obs", sparsity=0.5, block_size=8))
    report = sparsity_report(out)
    assert report.matrices and all(f >= 0.5 - 0.03 for f in report.matrices.values())  # zeros stay exact zeros
    reference = _outputs(float_only, batches)
    relative = float((_outputs(out, batches) - reference).norm() / reference.norm())
    assert relative < 0.05, relative
    path = tmp_path / "model_int8.pt"
    torch.save(out.state_dict(), path)
    reloaded = load_int8(model, path)
    torch.testing.assert_close(_outputs(reloaded, batches), _outputs(out, batches))


def test_bad_settings_and_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown unstructured method"):
        CompressionSettings(unstructured="random")
    for sparsity in (1.0, -0.1, 2, True):
        with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
            CompressionSettings(unstructured="obs", sparsity=sparsity)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs an unstructured method"):
        CompressionSettings(sparsity=0.5)
    with pytest.raises(ValueError, match="damp"):
        CompressionSettings(unstructured="obs", sparsity=0.5, damp=0.0)
    with pytest.raises(ValueError, match="needs calibration batches"):
        compress(_pruned(TINY_BERT), [], CompressionSettings(unstructured="obs", sparsity=0.5))
    all_padding = [{"input_ids": torch.ones(2, 8, dtype=torch.long), "attention_mask": torch.zeros(2, 8)}]
    with pytest.raises(ValueError, match="no calibration token"):
        compress(_pruned(TINY_BERT), all_padding, CompressionSettings(unstructured="obs", sparsity=0.5))
    with pytest.raises(TypeError, match="not a Hugging Face model"):
        compress(nn.Linear(4, 4), [], CompressionSettings(unstructured="magnitude", sparsity=0.5))
