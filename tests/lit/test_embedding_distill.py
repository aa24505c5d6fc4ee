"""Distilling a sentence embedder without labels: the module's embedding term by hand, and a real stage
(`distill_stage`, a Lightning fit) that brings a pruned tiny BERT's embeddings closer to the dense ones."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datasets
import pytest
import torch
from torch import nn

from tests.conftest import TINY_BERT, token_batch
from ziplm.core.distill import DistillSettings, DistillWeights
from ziplm.core.embedding import Pooling, embedding_distillation_loss, pool
from ziplm.core.structure import Structure
from ziplm.lit.distill import distill_stage
from ziplm.lit.module import ZipLMModule
from ziplm.models import adapter_for, build_model


class _States(nn.Module):
    """Returns fixed last hidden states (scaled by one trainable number); the batch is ignored."""

    def __init__(self, states: torch.Tensor) -> None:
        super().__init__()
        self.scale, self.states = nn.Parameter(torch.ones(())), states

    def forward(self, **_: Any) -> SimpleNamespace:
        states = self.states * self.scale
        return SimpleNamespace(loss=None, last_hidden_state=states, hidden_states=(states, states))


def test_the_module_distills_pooled_embeddings_as_computed_by_hand() -> None:
    student, teacher = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    pooling = Pooling("mean", normalize=True)
    module = ZipLMModule(_States(student), _States(teacher), DistillWeights(0.0, 1.0, 0.0), pooling=pooling)
    module.log = module.log_dict = lambda *a, **k: None  # type: ignore[method-assign]  # no Trainer here
    got = float(
        module.training_step({"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": mask}, 0).detach()
    )
    expected = embedding_distillation_loss(pool(student, mask, pooling), pool(teacher, mask, pooling))
    assert got == pytest.approx(float(expected), rel=1e-6)


def _embedding_gap(student: nn.Module, teacher: nn.Module, batch: dict[str, torch.Tensor], pooling: Pooling) -> float:
    with torch.no_grad():
        s, t = student(**batch).last_hidden_state, teacher(**batch).last_hidden_state
    mask = batch["attention_mask"]
    return float(embedding_distillation_loss(pool(s, mask, pooling), pool(t, mask, pooling)))


def test_a_distillation_stage_closes_the_embedding_gap(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = build_model(TINY_BERT, "base", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).eval()
    student = copy.deepcopy(teacher)
    adapter = adapter_for(student)
    dims = adapter.dims(student)
    kept = Structure.from_kept(dims, [[0]] * dims.num_layers, [range(8)] * dims.num_layers)  # 1 head, 8 neurons
    adapter.apply_structure(student, kept)
    with torch.no_grad():  # a student far from the teacher (pruning alone barely moves a random tiny BERT)
        for parameter in student.encoder.parameters():  # type: ignore[union-attr]
            parameter.add_(0.3 * torch.randn_like(parameter))
    ids, mask = token_batch(batch=32, seq=12, pad_from=6)
    rows = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist()})
    rows = rows.with_format("torch", columns=["input_ids", "attention_mask"])
    pooling, batch = Pooling("mean", normalize=True), {"input_ids": ids, "attention_mask": mask}
    before = _embedding_gap(student, teacher, batch, pooling)
    settings = DistillSettings(epochs_per_stage=6, learning_rate=2e-3, logit=1.0, token=1.0)
    trainer = {"_target_": "lightning.pytorch.Trainer", "accelerator": "cpu", "devices": 1, "batch_size": 16,
               "eval_batch_size": 16}  # fmt: skip
    distill_stage(student, teacher, rows, settings, trainer, tmp_path, torch.device("cpu"), pooling=pooling)
    after = _embedding_gap(student, teacher, batch, pooling)
    assert after < 0.5 * before, (before, after)


def test_under_bf16_autocast_the_embedding_loss_is_float32_maths() -> None:
    """Mixed precision runs the network in bf16; pooling and the loss must not: summing bf16 token states
    (8 significant bits) would blur the small distances distillation is closing."""
    student, teacher = torch.randn(4, 16, 32).bfloat16(), torch.randn(4, 16, 32).bfloat16()
    mask = torch.ones(4, 16, dtype=torch.long)
    mask[-1, 9:] = 0
    pooling = Pooling("mean", normalize=False)
    module = ZipLMModule(_States(student), _States(teacher), DistillWeights(0.0, 1.0, 1.0), pooling=pooling)
    module.log = module.log_dict = lambda *a, **k: None  # type: ignore[method-assign]  # no Trainer here
    batch = {"input_ids": torch.zeros(4, 16, dtype=torch.long), "attention_mask": mask}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert pool(student, mask, pooling).dtype == torch.float32
        loss = module.training_step(batch, 0)
    assert loss.dtype == torch.float32
    s, t = student.double(), teacher.double()  # the same bf16 states, the maths in float64
    m = mask.double().unsqueeze(-1)
    s_emb, t_emb = (s * m).sum(1) / m.sum(1), (t * m).sum(1) / m.sum(1)
    cos = (1 - torch.nn.functional.cosine_similarity(s_emb, t_emb, dim=-1)).mean()
    embedding = cos + (s_emb - t_emb).pow(2).mean() / t_emb.pow(2).mean()
    token = ((s - t).pow(2).mean(-1) * mask).sum() / mask.sum()
    assert float(loss.detach()) == pytest.approx(float(embedding + token), rel=1e-5)


def test_an_embedders_pooler_is_frozen_and_the_rest_trains() -> None:
    """The pooled embedding never reads HF's pooler, so it gets no gradient: frozen (DDP refuses trainable
    parameters without one), its dense weights kept; a classifier's pooler feeds its head and trains."""
    teacher = build_model(TINY_BERT, "base").eval()
    student = copy.deepcopy(teacher)
    module = ZipLMModule(student, teacher, DistillWeights(0.0, 1.0, 1.0), pooling=Pooling("mean"))
    module.log = module.log_dict = lambda *a, **k: None  # type: ignore[method-assign]  # no Trainer here
    ids, mask = token_batch(batch=4, seq=8, pad_from=5)
    module.training_step({"input_ids": ids, "attention_mask": mask}, 0).backward()
    trained = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trained == {n for n, p in student.named_parameters() if p.grad is not None}
    assert trained == {n for n, _ in student.named_parameters() if not n.startswith("pooler.")}
    classifier = build_model(TINY_BERT, "classification", num_labels=2)
    ZipLMModule(classifier, copy.deepcopy(classifier), DistillWeights(0.0, 1.0, 1.0))
    assert all(p.requires_grad for p in classifier.parameters())


def test_set_dropout_reaches_every_kind_of_dropout_and_puts_it_back() -> None:
    import transformers

    from ziplm.core.distill import set_dropout

    opt = transformers.OPTForCausalLM(
        transformers.OPTConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                               max_position_embeddings=32, word_embed_proj_dim=16, dropout=0.1, attention_dropout=0.2)
    )  # fmt: skip
    bert = build_model(TINY_BERT, "base", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    for model in (opt, bert):
        before = {(n, k): v for n, m in model.named_modules() for k, v in _dropouts(m).items()}
        assert before and any(v > 0 for v in before.values())
        restore = set_dropout(model, 0.0)
        assert all(v == 0.0 for m in model.modules() for v in _dropouts(m).values())
        model.train()
        ids = torch.randint(3, 40, (2, 6))
        torch.testing.assert_close(model(input_ids=ids)[0], model(input_ids=ids)[0])  # in train mode: no noise
        restore()
        assert {(n, k): v for n, m in model.named_modules() for k, v in _dropouts(m).items()} == before
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        set_dropout(bert, 1.0)


def _dropouts(module: nn.Module) -> dict[str, float]:
    if isinstance(module, nn.Dropout):
        return {"p": module.p}
    return {k: v for k in ("dropout", "attention_dropout") if isinstance(v := getattr(module, k, None), float)}


def test_a_stage_without_dropout_trains_deterministically_and_keeps_the_members_dropout(tmp_path: Path) -> None:
    """distill.dropout=0: two fits from the same start under different seeds end equal only if no dropout noise
    was drawn; the student's dropout is back at its config value afterwards."""
    import lightning as L

    torch.manual_seed(0)
    teacher = build_model(TINY_BERT, "base", hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3).eval()
    start = copy.deepcopy(teacher)
    with torch.no_grad():
        for parameter in start.encoder.parameters():  # type: ignore[union-attr]
            parameter.add_(0.1 * torch.randn_like(parameter))
    ids, mask = token_batch(batch=1, seq=10, pad_from=5)
    rows = datasets.Dataset.from_dict({"input_ids": ids.tolist() * 16, "attention_mask": mask.tolist() * 16})
    rows = rows.with_format("torch", columns=["input_ids", "attention_mask"])
    # One batch of 16 equal rows: one step, the same whatever order the loader shuffles them in.
    trainer = {"_target_": "lightning.pytorch.Trainer", "accelerator": "cpu", "devices": 1, "batch_size": 16,
               "eval_batch_size": 16}  # fmt: skip
    pooling = Pooling("mean", normalize=True)
    ends = {}
    for name, dropout, seed in (("off-a", 0.0, 1), ("off-b", 0.0, 2), ("on-a", None, 1), ("on-b", None, 2)):
        student = copy.deepcopy(start)
        L.seed_everything(seed)  # only the dropout masks depend on it
        settings = DistillSettings(epochs_per_stage=1, learning_rate=1e-3, dropout=dropout)
        distill_stage(student, teacher, rows, settings, trainer, tmp_path / name, torch.device("cpu"), pooling=pooling)
        ends[name] = torch.cat([p.detach().flatten() for p in student.encoder.parameters()])  # type: ignore[union-attr]
        assert {m.p for m in student.modules() if isinstance(m, nn.Dropout)} == {0.3}
    assert not torch.equal(ends["off-a"], torch.cat([p.detach().flatten() for p in start.encoder.parameters()]))  # type: ignore[union-attr]
    torch.testing.assert_close(ends["off-a"], ends["off-b"])  # no dropout: the seed does not matter ...
    assert not torch.allclose(ends["on-a"], ends["on-b"])  # ... with the model's dropout it does
