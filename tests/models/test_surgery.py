"""Physical surgery equals masking, removed sublayers are real identities, parameters drop exactly."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from torch import nn

from tests.conftest import TINY_BERT, TINY_GPT2, token_batch
from ziplm.core.structure import Structure
from ziplm.models import adapter_for, build_model, count_parameters, get_output_weight, set_output_weight
from ziplm.models.adapter import sublayer_parameter_counts
from ziplm.models.build import ModelSpec

CASES = [(TINY_BERT, "classification"), (TINY_BERT, "qa"), (TINY_BERT, "base"), (TINY_GPT2, "lm")]


def _model(spec: ModelSpec, head: str) -> nn.Module:
    extra = {"num_labels": 3} if head == "classification" else {}
    return build_model(spec, head, **extra).eval()  # type: ignore[arg-type]


def _outputs(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    tensors = [h for h in out.hidden_states]
    for name in ("logits", "start_logits", "end_logits"):
        if getattr(out, name, None) is not None:
            tensors.append(getattr(out, name))
    return tensors


def _random_partial_structure(model: nn.Module, rng: random.Random) -> Structure:
    """Random kept sets with at least one head and one neuron per layer (no module removal)."""
    dims = adapter_for(model).dims(model)
    heads = [rng.sample(range(dims.num_heads), rng.randint(1, dims.num_heads)) for _ in range(dims.num_layers)]
    neurons = [
        rng.sample(range(dims.intermediate_size), rng.randint(1, dims.intermediate_size))
        for _ in range(dims.num_layers)
    ]
    return Structure.from_kept(dims, heads, neurons)


def _zero_pruned_columns(model: nn.Module, structure: Structure) -> None:
    """The masking reference: zero the output-projection input columns of everything removed."""
    adapter = adapter_for(model)
    hd = structure.dims.head_dim
    for i, layer in enumerate(structure.layers):
        w = get_output_weight(adapter, model, i, "attention")
        for h in set(range(structure.dims.num_heads)) - set(layer.heads):
            w[:, h * hd : (h + 1) * hd] = 0
        set_output_weight(adapter, model, i, "attention", w)
        w = get_output_weight(adapter, model, i, "ffn")
        w[:, sorted(set(range(structure.dims.intermediate_size)) - set(layer.neurons))] = 0
        set_output_weight(adapter, model, i, "ffn", w)


@pytest.mark.parametrize(("spec", "head"), CASES)
def test_physical_surgery_equals_zeroed_columns(spec: ModelSpec, head: str) -> None:
    model = _model(spec, head)
    structure = _random_partial_structure(model, random.Random(1))
    masked = copy.deepcopy(model)
    _zero_pruned_columns(masked, structure)
    adapter_for(model).apply_structure(model, structure)
    ids, mask = token_batch()
    for got, want in zip(_outputs(model, ids, mask), _outputs(masked, ids, mask), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert count_parameters(model) < count_parameters(masked)


def _reference_forward(model: nn.Module, ids: torch.Tensor, structure: Structure) -> torch.Tensor:
    """Last hidden state computed by hand with the identity semantics of removed sublayers.

    Written against HF's modules directly (not our surgery): post-LN BERT skips a removed sublayer's
    residual-add + LayerNorm entirely; pre-LN GPT-2 keeps x unchanged (x -> x).
    """
    is_bert = adapter_for(model).family == "bert"
    blocks = adapter_for(model).layers(model)
    with torch.no_grad():
        if is_bert:
            base = getattr(model, "bert", model)
            x = base.embeddings(input_ids=ids)
        else:
            base = model.transformer
            x = base.wte(ids) + base.wpe(torch.arange(ids.shape[1]))[None]
        for block, layer in zip(blocks, structure.layers, strict=True):
            if is_bert:
                a = x if layer.attention_removed else block.attention(x)[0]
                x = a if layer.ffn_removed else block.output(block.intermediate(a), a)
            else:
                if not layer.attention_removed:
                    x = x + block.attn(block.ln_1(x))[0]
                if not layer.ffn_removed:
                    x = x + block.mlp(block.ln_2(x))
        return x if is_bert else base.ln_f(x)


def _randomize_layer_norms(model: nn.Module) -> None:
    """Trained-looking LayerNorms: with HF's init (weight 1, bias 0) LayerNorm(LayerNorm(x)) = LayerNorm(x), so
    a post-LN sublayer with zero weights would pass for a removed one on an untrained model."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.normal_(1.0, 0.5)
                module.bias.normal_(0.0, 0.5)


def _zero_removed_sublayers(model: nn.Module, structure: Structure) -> nn.Module:
    """A copy in which every removed sublayer is "weights 0, bias 0" instead (its output projection zeroed)."""
    zeroed = copy.deepcopy(model)
    adapter = adapter_for(zeroed)
    with torch.no_grad():
        for i, layer in enumerate(structure.layers):
            for sublayer, removed in (("attention", layer.attention_removed), ("ffn", layer.ffn_removed)):
                if removed:
                    projection = adapter.output_projection(zeroed, i, sublayer)
                    projection.weight.zero_()
                    projection.bias.zero_()
    return zeroed


@pytest.mark.parametrize("spec", [TINY_BERT, TINY_GPT2])
def test_module_removal_is_identity(spec: ModelSpec) -> None:
    model = _model(spec, "base" if spec.family == "bert" else "lm")
    _randomize_layer_norms(model)
    dims = adapter_for(model).dims(model)
    ids, _ = token_batch(pad_from=None)
    dense = Structure.dense(dims)
    # The hand-written reference must first agree with HF on the dense model.
    hf_dense = _outputs(model, ids, None)[-1 if spec.family == "bert" else -2]
    torch.testing.assert_close(_reference_forward(model, ids, dense), hf_dense, atol=1e-5, rtol=0)

    all_heads, all_neurons = list(range(dims.num_heads)), list(range(dims.intermediate_size))
    structure = Structure.from_kept(
        dims, [[], all_heads, []], [all_neurons, [], []]
    )  # layer 0: attention gone; layer 1: FFN gone; layer 2: both gone
    want = _reference_forward(model, ids, structure)
    zeroed = _zero_removed_sublayers(model, structure)
    adapter_for(model).apply_structure(model, structure)
    got = _outputs(model, ids, None)[-1 if spec.family == "bert" else -2]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # A removed sublayer is not "weights 0, bias 0": for post-LN BERT that would still apply LayerNorm
    # (x -> LayerNorm(x + 0)); for pre-LN GPT-2 a zero branch adds nothing, so there the two agree.
    as_zeros = _outputs(zeroed, ids, None)[-1 if spec.family == "bert" else -2]
    if spec.family == "bert":
        assert (got - as_zeros).abs().max() > 0.1
    else:
        torch.testing.assert_close(got, as_zeros, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("spec", "head"), CASES)
def test_parameter_counts_drop_exactly(spec: ModelSpec, head: str) -> None:
    model = _model(spec, head)
    dims = adapter_for(model).dims(model)
    dense_total = count_parameters(model)
    structure = _random_partial_structure(model, random.Random(7))
    structure = Structure.from_kept(  # add module removal on the last layer
        dims,
        [*(la.heads for la in structure.layers[:-1]), ()],
        [*(la.neurons for la in structure.layers[:-1]), ()],
    )

    def prunable(s: Structure) -> int:
        return sum(c["attention"] + c["ffn"] for c in sublayer_parameter_counts(dims, s))

    adapter_for(model).apply_structure(model, structure)
    assert count_parameters(model) == dense_total - prunable(Structure.dense(dims)) + prunable(structure)


@pytest.mark.parametrize("spec", [TINY_BERT, TINY_GPT2])
def test_repruning_in_steps_equals_pruning_once(spec: ModelSpec) -> None:
    """Gradual schedules re-prune an already pruned model; ids stay the dense model's."""
    once = _model(spec, "base")
    steps = copy.deepcopy(once)
    dims = adapter_for(once).dims(once)
    first = Structure.from_kept(dims, [[0, 1, 3], [1, 2], [0, 1, 2, 3]], [range(40), range(10, 64), range(64)])
    second = Structure.from_kept(dims, [[1, 3], [], [2]], [range(0, 40, 3), range(20, 30), []])
    adapter_for(steps).apply_structure(steps, first)
    adapter_for(steps).apply_structure(steps, second)
    adapter_for(once).apply_structure(once, second)
    ids, mask = token_batch()
    for got, want in zip(_outputs(steps, ids, mask), _outputs(once, ids, mask), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_bad_structures_are_refused_with_a_clear_error() -> None:
    model = _model(TINY_BERT, "base")
    dims = adapter_for(model).dims(model)
    full = list(range(dims.intermediate_size))
    with pytest.raises(ValueError, match=r"unknown head ids \[7\]"):
        Structure.from_kept(dims, [[0, 7], [0], [0]], [full, full, full])
    with pytest.raises(ValueError, match=r"unknown neuron ids \[64\]"):
        Structure.from_kept(dims, [[0], [0], [0]], [[64], full, full])
    with pytest.raises(ValueError, match="duplicate head ids"):
        Structure.from_kept(dims, [[0, 0], [0], [0]], [full, full, full])
    with pytest.raises(ValueError, match="different model"):
        Structure.from_kept(dims, [[0], [0]], [full, full])
    other = adapter_for(_model(TINY_GPT2, "base")).dims(_model(TINY_GPT2, "base"))
    wider = type(dims)(**{**dims.to_dict(), "intermediate_size": 128})
    assert other == dims  # same dims across families are compatible by design
    with pytest.raises(ValueError, match="dims"):
        adapter_for(model).apply_structure(model, Structure.dense(wider))
    adapter_for(model).apply_structure(model, Structure.from_kept(dims, [[0], [0], [0]], [full, full, full]))
    with pytest.raises(ValueError, match="already pruned away"):
        adapter_for(model).apply_structure(model, Structure.from_kept(dims, [[1], [0], [0]], [full, full, full]))
