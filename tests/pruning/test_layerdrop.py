"""Layer-dropping students: exact identities, parameter arithmetic, both representations agree, save/load,
the layer-count choice from the latency table, and token distillation over (student, teacher) layer pairs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import TINY_BERT, TINY_GPT2, token_batch
from ziplm.core.distill import paired_hidden_states, token_distillation_loss
from ziplm.core.latency import LatencyModel, LatencyTable
from ziplm.core.structure import Structure
from ziplm.models import adapter_for, build_model, count_parameters, load_pruned, save_pruned
from ziplm.models.adapter import current_structure, sublayer_parameter_counts
from ziplm.models.build import ModelSpec
from ziplm.pruning.layerdrop import (
    check_keep,
    choose_layer_count,
    distillation_pairs,
    drop_layers,
    drop_to_identity,
    keep_every,
    layer_count_speedups,
    spread_layers,
)

SPECS = [TINY_BERT, TINY_GPT2]


def _model(spec: ModelSpec) -> nn.Module:
    extra = {"initializer_range": 0.2}  # layers visibly change the hidden states
    if spec.family == "gpt2":
        return build_model(spec, "lm", **extra).eval()
    return build_model(spec, "classification", num_labels=3, **extra).eval()


def _outputs(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    ids, mask = token_batch(batch=3, seq=12, pad_from=8)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return out.logits, out.hidden_states[-1]


def test_layer_choices() -> None:
    assert keep_every(12, 2) == [0, 2, 4, 6, 8, 10]  # DistilBERT
    assert keep_every(5, 3) == [0, 3]
    assert spread_layers(12, 6) == [0, 2, 4, 7, 9, 11]  # DistilGPT2's initialisation
    assert spread_layers(12, 12) == list(range(12))
    assert spread_layers(12, 4) == [0, 4, 7, 11]
    assert spread_layers(3, 1) == [0]
    for n in range(1, 9):
        for count in range(1, n + 1):
            layers = spread_layers(n, count)
            assert len(set(layers)) == count and layers == sorted(layers) and layers[-1] <= n - 1
    with pytest.raises(ValueError, match=r"1\.\.3"):
        spread_layers(3, 0)
    with pytest.raises(ValueError, match="k >= 1"):
        keep_every(3, 0)


@pytest.mark.parametrize(
    ("keep", "message"), [([], "at least one"), ([0, 0], "duplicate"), ([1, 3], r"outside 0\.\.2")]
)
def test_bad_keep_lists(keep: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_keep(keep, 3)
    with pytest.raises(ValueError, match=message):
        drop_layers(_model(TINY_BERT), keep)


@pytest.mark.parametrize("spec", SPECS)
def test_keeping_every_layer_is_the_teacher(spec: ModelSpec) -> None:
    teacher = _model(spec)
    for student in (drop_layers(teacher, [0, 1, 2]), drop_to_identity(teacher, [0, 1, 2])):
        for got, expected in zip(_outputs(student), _outputs(teacher), strict=True):
            torch.testing.assert_close(got, expected, atol=0, rtol=0)


@pytest.mark.parametrize("spec", SPECS)
def test_dropped_layers_are_removed_and_both_forms_agree(spec: ModelSpec) -> None:
    teacher = _model(spec)
    before = _outputs(teacher)
    adapter = adapter_for(teacher)
    dims = adapter.dims(teacher)
    per_layer = sum(p.numel() for p in adapter.layers(teacher)[0].parameters())
    dense_counts = sublayer_parameter_counts(dims, Structure.dense(dims))[0]
    assert per_layer == dense_counts["attention"] + dense_counts["ffn"]  # the arithmetic below is honest
    short, identity = drop_layers(teacher, [2, 0]), drop_to_identity(teacher, [0, 2])
    assert len(adapter.layers(short)) == 2 and short.config.num_hidden_layers == 2
    assert len(adapter.layers(identity)) == 3 and identity.config.num_hidden_layers == 3
    for student in (short, identity):
        assert count_parameters(student) == count_parameters(teacher) - per_layer
    assert sum(p.numel() for p in adapter.layers(identity)[1].parameters()) == 0
    torch.testing.assert_close(adapter.layers(short)[1].state_dict(), adapter.layers(teacher)[2].state_dict())
    for a, b in zip(_outputs(short), _outputs(identity), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(_outputs(short)[0], before[0], atol=1e-3)  # a layer really is gone
    for got, expected in zip(_outputs(teacher), before, strict=True):  # the teacher is untouched
        torch.testing.assert_close(got, expected, atol=0, rtol=0)


@pytest.mark.parametrize("spec", SPECS)
def test_both_forms_save_and_load(spec: ModelSpec, tmp_path: Path) -> None:
    teacher = _model(spec)
    identity = drop_to_identity(teacher, [1])
    folder = save_pruned(identity, current_structure(identity, adapter_for(identity).dims(identity)), tmp_path / "i")
    for a, b in zip(_outputs(load_pruned(folder)), _outputs(identity), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    short = drop_layers(teacher, [1])
    short.save_pretrained(tmp_path / "s")  # a plain HF model: stock from_pretrained works
    reloaded = type(short).from_pretrained(tmp_path / "s").eval()
    for a, b in zip(_outputs(reloaded), _outputs(short), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_short_gpt2_generates_with_its_kv_cache() -> None:
    """Kept blocks are renumbered, so the KV cache of a 2-block model is indexed 0 and 1."""
    short = drop_layers(_model(TINY_GPT2), [0, 2])
    assert [block.attn.layer_idx for block in short.transformer.h] == [0, 1]
    ids = torch.randint(0, 120, (1, 5))
    generated = short.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad():  # greedy decoding with the cache equals recomputing without it
        manual = ids
        for _ in range(4):
            next_id = short(manual).logits[:, -1].argmax(-1, keepdim=True)
            manual = torch.cat([manual, next_id], dim=1)
    assert torch.equal(generated, manual)


def test_dropping_layers_of_a_pruned_model_keeps_their_structure() -> None:
    model = _model(TINY_BERT)
    dims = adapter_for(model).dims(model)
    pruned = Structure.from_kept(dims, [[0, 1], [2], [0, 1, 2, 3]], [range(10), range(64), range(5)])
    adapter_for(model).apply_structure(model, pruned)
    short = drop_layers(model, [0, 2])
    carried = current_structure(short, adapter_for(short).dims(short))
    assert carried.dims.num_layers == 2 and carried.layers == (pruned.layers[0], pruned.layers[2])
    for a, b in zip(_outputs(short), _outputs(drop_to_identity(model, [0, 2])), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_layer_count_is_the_closest_predicted_speedup() -> None:
    # 4 layers, each 0.2 s of T_base = 1.0 s (0.05 attention + 0.15 FFN): keeping k takes 0.2 + 0.2k.
    table = LatencyTable({"fake": True}, 1.0, {4: 0.05, 2: 0.025, 0: 0.0}, {64: 0.15, 32: 0.075, 0: 0.0})
    latency = LatencyModel(table, 4)
    dims = adapter_for(m := _model(TINY_BERT)).dims(m)
    dims = type(dims)(**{**dims.to_dict(), "num_layers": 4})
    speedups = layer_count_speedups(latency, dims)
    for k, s in speedups.items():
        assert s == pytest.approx(1.0 / (0.2 + 0.2 * k))
    assert choose_layer_count(latency, dims, 2.0) == (2, pytest.approx(1 / 0.6))  # 1.67x vs 2.5x
    assert choose_layer_count(latency, dims, 2.2)[0] == 1  # 2.5x is 0.3 away, 1.67x 0.53
    assert choose_layer_count(latency, dims, 1.1)[0] == 4  # 1.0x is closer than 1.25x
    # A tie between 1.25x (3 layers) and 1.667x keeps more layers.
    assert choose_layer_count(latency, dims, (1.25 + 1 / 0.6) / 2)[0] == 3


def test_paired_hidden_states() -> None:
    student = [torch.full((1, 2, 3), float(i)) for i in range(2)]
    teacher = [torch.full((1, 2, 3), 10.0 + i) for i in range(4)]
    s, t = paired_hidden_states(student, teacher, [(0, 1), (1, 3)])
    assert [float(x[0, 0, 0]) for x in s] == [0.0, 1.0] and [float(x[0, 0, 0]) for x in t] == [11.0, 13.0]
    assert float(token_distillation_loss(s, t, None)) == pytest.approx((11**2 + 12**2) / 2)
    assert paired_hidden_states(student, student, None) == (student, student)
    with pytest.raises(ValueError, match="outside"):
        paired_hidden_states(student, teacher, [(2, 0)])
    with pytest.raises(ValueError, match="empty"):
        paired_hidden_states(student, teacher, [])


def test_distillation_module_matches_student_layers_to_their_teacher_layers() -> None:
    """A 2-layer student from layers [0, 2] is distilled towards teacher layers 0 and 2, not 0 and 1."""
    from ziplm.core.distill import DistillWeights
    from ziplm.lit.module import ZipLMModule

    teacher = _model(TINY_BERT)
    student = drop_layers(teacher, [0, 2])
    ids, mask = token_batch(batch=3, seq=12, pad_from=8)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2])}
    weights = DistillWeights(task=0.0, logit=0.0, token=1.0)
    assert distillation_pairs([2, 0], shorter=True) == [(0, 0), (1, 2)]
    assert distillation_pairs([2, 0], shorter=False) == [(0, 0), (2, 2)]
    mapped = ZipLMModule(student, teacher, weights, layer_pairs=distillation_pairs([0, 2], shorter=True))
    mapped.log = mapped.log_dict = lambda *a, **k: None  # type: ignore[method-assign]  # no Trainer here
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        s = student(**inputs, output_hidden_states=True).hidden_states
        t = teacher(**inputs, output_hidden_states=True).hidden_states
        expected = token_distillation_loss([s[1], s[2]], [t[1], t[3]], mask)
        wrong = token_distillation_loss([s[1], s[2]], [t[1], t[2]], mask)
        got = mapped.training_step(batch, 0)
    assert float(got) == pytest.approx(float(expected), rel=1e-6) and abs(float(expected) - float(wrong)) > 1e-3
    with pytest.raises(ValueError, match="2 hidden states, teacher 3"):  # without a mapping the counts differ
        unmapped = ZipLMModule(student, teacher, weights)
        unmapped.log = unmapped.log_dict = lambda *a, **k: None  # type: ignore[method-assign]
        unmapped.training_step(batch, 0)
