"""The Fisher mask baseline (Kwon et al. 2022): importances against finite differences, the selection rule
against real loss changes, mask tuning against a brute-force least-squares fit, and its levels database."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import TINY_BERT, TINY_GPT2, token_batch
from ziplm.core.structure import Structure
from ziplm.models import adapter_for, build_model
from ziplm.models.adapter import Sublayer, get_output_weight, set_output_weight
from ziplm.models.build import ModelSpec
from ziplm.pruning.capture import capture
from ziplm.pruning.database_builder import DatabaseSettings, build_database
from ziplm.pruning.fisher import fisher_importance, rescaled_masks, unit_gram
from ziplm.pruning.stitch import stitch

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def _model(spec: ModelSpec) -> nn.Module:
    if spec.family == "gpt2":
        return build_model(spec, "lm").eval()
    return build_model(spec, "classification", num_labels=3, initializer_range=0.2).eval()


def _batches(spec: ModelSpec, n: int = 2, rows: int = 3) -> list[dict[str, torch.Tensor]]:
    out = []
    for _ in range(n):
        ids, mask = token_batch(batch=rows, seq=10, pad_from=7)
        labels = ids.masked_fill(mask == 0, -100) if spec.family == "gpt2" else torch.randint(0, 3, (rows,))
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def _scaled_loss(model: nn.Module, sample: dict, layer: int, sublayer: Sublayer, cols: torch.Tensor, s: float) -> float:
    """Loss of one sample with the unit's input columns of the output projection scaled by s (a mask value)."""
    adapter = adapter_for(model)
    original = get_output_weight(adapter, model, layer, sublayer)
    scaled = original.clone()
    scaled[:, cols] *= s
    set_output_weight(adapter, model, layer, sublayer, scaled)
    try:
        with torch.no_grad():
            if model.config.model_type != "gpt2":
                return float(model(**sample).loss)
            # HF computes the LM loss in float32 (too coarse for finite differences): redo it in float64.
            logits = model(**{k: v for k, v in sample.items() if k != "labels"}).logits
            labels = sample["labels"][:, 1:].reshape(-1)
            return float(
                F.cross_entropy(logits[:, :-1].reshape(labels.numel(), -1).double(), labels, ignore_index=-100)
            )
    finally:
        set_output_weight(adapter, model, layer, sublayer, original)


@pytest.mark.parametrize(("spec", "group"), [(TINY_BERT, 1), (TINY_GPT2, 4)])
def test_importance_equals_half_sum_of_squared_finite_differences(spec: ModelSpec, group: int) -> None:
    model, batches = _model(spec).double(), _batches(spec, n=1)  # 3 samples, one padded
    importance = fisher_importance(model, batches, ffn_group_size=group)
    samples = [{k: v[i : i + 1] for k, v in b.items()} for b in batches for i in range(len(b["input_ids"]))]
    dims = adapter_for(model).dims(model)
    eps = 1e-4
    for layer in range(dims.num_layers):
        for sublayer, width, units in (("attention", dims.head_dim, range(dims.num_heads)), ("ffn", group, range(3))):
            for unit in units:
                cols = torch.arange(unit * width, (unit + 1) * width)
                grads = []
                for sample in samples:
                    up = _scaled_loss(model, sample, layer, sublayer, cols, 1 + eps)
                    down = _scaled_loss(model, sample, layer, sublayer, cols, 1 - eps)
                    grads.append((up - down) / (2 * eps))
                expected = 0.5 * sum(g * g for g in grads)
                got = float(importance[(layer, sublayer)][unit])
                assert got == pytest.approx(expected, rel=1e-4, abs=1e-12), (layer, sublayer, unit)


def test_microbatch_importance_squares_batch_mean_gradients() -> None:
    model, batches = _model(TINY_BERT).double(), _batches(TINY_BERT)
    per_batch = fisher_importance(model, batches, microbatch=3)
    # Reference: the gradient of each batch's mean loss w.r.t. a mask on layer 1's heads, by autograd.
    proj = adapter_for(model).output_projection(model, 1, "attention")
    assert proj is not None
    expected = torch.zeros(4, dtype=torch.float64)
    for batch in batches:
        mask = torch.ones(4, dtype=torch.float64, requires_grad=True)
        handle = proj.register_forward_pre_hook(lambda _m, a, mask=mask: (a[0] * mask.repeat_interleave(8),))
        (grad,) = torch.autograd.grad(model(**batch).loss, [mask])
        handle.remove()
        expected += 0.5 * grad.pow(2)
    torch.testing.assert_close(per_batch[(1, "attention")], expected)


def _trained_classifier(seed: int = 0) -> tuple[nn.Module, list[dict[str, torch.Tensor]]]:
    """A tiny BERT that learnt "is the last token < 60": some heads matter, some do not."""
    spec = ModelSpec(name="t", family="bert", source="scratch", hidden_size=32, num_layers=2, num_heads=4,
                     intermediate_size=64, vocab_size=120, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(seed)
    model = build_model(spec, "classification", num_labels=2, **NO_DROPOUT)

    def batch(n: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, 120, (n, 8))
        # The label sits at the last position: attention heads must route it to the pooled first token.
        # 10% label noise keeps the per-sample gradients (and hence the Fisher) away from zero.
        labels = (ids[:, -1] < 60).long() ^ (torch.rand(n) < 0.1).long()
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(300):
        loss = model(**batch(32)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), [batch(32) for _ in range(4)]


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_removing_low_fisher_heads_costs_less_loss_than_high_fisher_heads(seed: int) -> None:
    """Single heads of a 2×4-head model are too redundant to rank reliably; halves are not."""
    model, batches = _trained_classifier(seed)
    importance = fisher_importance(model, batches)
    heads = sorted(
        ((layer, h) for layer in range(2) for h in range(4)), key=lambda x: float(importance[(x[0], "attention")][x[1]])
    )
    dims = adapter_for(model).dims(model)

    def loss_without(removed: list[tuple[int, int]]) -> float:
        kept = [[h for h in range(4) if (layer, h) not in removed] for layer in range(2)]
        pruned = copy.deepcopy(model)
        adapter_for(pruned).apply_structure(pruned, Structure.from_kept(dims, kept, [range(64)] * 2))
        with torch.no_grad():
            return sum(float(pruned(**b).loss) for b in batches) / len(batches)

    with torch.no_grad():
        dense = sum(float(model(**b).loss) for b in batches) / len(batches)
    low, high = loss_without(heads[:4]) - dense, loss_without(heads[4:]) - dense
    assert high > max(4 * low, 1e-3), (low, high)


def _contributions(model: nn.Module, layer: int, sublayer: Sublayer, batches: list[dict], width: int) -> torch.Tensor:
    """(units, tokens·d_out) per-unit output contributions W[:, cols_u] x[cols_u], padding excluded."""
    proj = adapter_for(model).output_projection(model, layer, sublayer)
    assert proj is not None
    inputs: list[torch.Tensor] = []
    handle = proj.register_forward_pre_hook(lambda _m, a: inputs.append(a[0].detach().double()))
    with torch.no_grad():
        for b in batches:
            model(**b)
    handle.remove()
    mask = torch.cat([b["attention_mask"].reshape(-1) for b in batches]).bool()
    x = torch.cat([i.reshape(-1, i.shape[-1]) for i in inputs])[mask]
    W = get_output_weight(adapter_for(model), model, layer, sublayer).double()
    n = W.shape[1] // width
    return torch.stack(
        [(x[:, u * width : (u + 1) * width] @ W[:, u * width : (u + 1) * width].T).reshape(-1) for u in range(n)]
    )


@pytest.mark.parametrize(("spec", "sublayer", "width"), [(TINY_BERT, "attention", 8), (TINY_GPT2, "ffn", 4)])
def test_mask_tuning_is_the_least_squares_fit(spec: ModelSpec, sublayer: Sublayer, width: int) -> None:
    model, batches = _model(spec), _batches(spec)
    stats = capture(model, batches, [1], show_progress=False).stats[(1, sublayer)]
    W = get_output_weight(adapter_for(model), model, 1, sublayer)
    gram = unit_gram(W, stats.hessian.hessian(), width)
    kept = torch.tensor([0, 2]) if sublayer == "attention" else torch.tensor([1, 3, 4, 7, 8, 12])
    masks = rescaled_masks(gram, kept, ridge=0.0)
    A = _contributions(model, 1, sublayer, batches, width)
    target = A.sum(dim=0)
    reference = torch.linalg.lstsq(A[kept].T, target[:, None]).solution[:, 0]
    torch.testing.assert_close(masks, reference, rtol=1e-5, atol=1e-7)
    tuned = (masks[:, None] * A[kept]).sum(0) - target
    binary = A[kept].sum(0) - target
    assert tuned.pow(2).sum() < binary.pow(2).sum()
    # All units kept: the fit is the identity.
    every = torch.arange(gram.shape[0])
    torch.testing.assert_close(rescaled_masks(gram, every), torch.ones(len(every), dtype=torch.float64))


def _hidden(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return model(**inputs, output_hidden_states=True).hidden_states[-1]


@pytest.mark.parametrize("method", ["fisher", "fisher-norescale"])
def test_fisher_database_levels_follow_importance(tmp_path: Path, method: str) -> None:
    model, batches = _model(TINY_BERT), _batches(TINY_BERT)
    settings = DatabaseSettings(method=method, ffn_group_size=2)
    db = build_database(model, batches, tmp_path / "db", settings, show_progress=False)
    importance = fisher_importance(model, batches, ffn_group_size=2)
    adapter = adapter_for(model)
    for layer in range(3):
        for sublayer, group in (("attention", 1), ("ffn", 2)):
            scores = importance[(layer, sublayer)]
            errors = db.errors(layer, sublayer)
            assert errors[max(errors)] == pytest.approx(0.0, abs=1e-15)
            assert errors[0] == pytest.approx(float(scores.sum()))
            W = get_output_weight(adapter, model, layer, sublayer)
            width = 8 if sublayer == "attention" else 2
            for keep in sorted(errors)[1:-1]:
                entry = db.entry(layer, sublayer, keep)
                units = scores.sort(descending=True, stable=True).indices[: keep // group].sort().values
                assert entry.ids.tolist() == (units[:, None] * group + torch.arange(group)).reshape(-1).tolist()
                removed = float(scores.sum() - scores[units].sum())
                assert entry.error == pytest.approx(removed, rel=1e-6, abs=1e-15)
                original = W[:, (units[:, None] * width + torch.arange(width)).reshape(-1)]
                if method == "fisher-norescale":
                    torch.testing.assert_close(entry.weight, original)
                else:  # each kept unit's columns scaled by one factor
                    ratio = entry.weight / original
                    per_unit = ratio.reshape(W.shape[0], -1, width)
                    torch.testing.assert_close(per_unit, per_unit[:1, :, :1].expand_as(per_unit), rtol=1e-4, atol=1e-4)
    full = [(4, 64)] * 3
    torch.testing.assert_close(_hidden(stitch(model, db, full), batches[0]), _hidden(model, batches[0]))
    again = build_database(model, batches, tmp_path / "db", settings, show_progress=False)  # resume: no rebuild
    assert again.completed_layers() == {0, 1, 2} and again.build_seconds == {}


def test_fisher_database_on_a_pruned_model(tmp_path: Path) -> None:
    """Gradual schedules re-prune: ids stay original, removed sublayers offer only their removal level."""
    model, batches = _model(TINY_BERT), _batches(TINY_BERT)
    dims = adapter_for(model).dims(model)
    adapter_for(model).apply_structure(
        model, Structure.from_kept(dims, [[1, 3], [], [0, 1, 2, 3]], [range(0, 64, 2), range(64), []])
    )
    db = build_database(model, batches, tmp_path / "db", DatabaseSettings(method="fisher"), show_progress=False)
    assert sorted(db.errors(1, "attention")) == [0] and sorted(db.errors(2, "ffn")) == [0]
    assert sorted(db.errors(0, "attention")) == [0, 1, 2]
    assert set(db.entry(0, "attention", 1).ids.tolist()) <= {1, 3}
    ffn_keep = sorted(db.errors(0, "ffn"))[3]
    assert set(db.entry(0, "ffn", ffn_keep).ids.tolist()) <= set(range(0, 64, 2))
    pruned = stitch(model, db, [(1, ffn_keep), (0, 52), (2, 0)])
    assert _hidden(pruned, batches[0]).isfinite().all()


@pytest.mark.parametrize(
    ("batches", "message"),
    [
        ([{"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4)}], "with_labels=True"),
        ([], "at least one"),
    ],
)
def test_fisher_needs_labelled_batches(tmp_path: Path, batches: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_database(_model(TINY_BERT), batches, tmp_path / "db", DatabaseSettings(method="fisher"))


def test_unknown_method_lists_the_fisher_baselines(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fisher-norescale"):
        build_database(_model(TINY_BERT), _batches(TINY_BERT), tmp_path / "db", DatabaseSettings(method="fischer"))
