"""Distillation losses against direct formulas."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from ziplm.core.distill import (
    DistillWeights,
    logit_distillation_loss,
    regression_distillation_loss,
    token_distillation_loss,
)


def test_token_loss_ignores_padding_and_averages_layers() -> None:
    s = [torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)]
    t = [torch.ones(2, 3, 4), 2 * torch.ones(2, 3, 4)]
    t[0][1, 2] = 100.0  # a padded position: must not count
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # layer 0: per-token MSE 1 on real tokens; layer 1: 4 -> mean 2.5
    assert token_distillation_loss(s, t, mask).item() == pytest.approx(2.5)
    assert token_distillation_loss(s, s, mask).item() == 0.0
    with pytest.raises(ValueError, match="hidden states"):
        token_distillation_loss(s, t[:1], mask)


def test_logit_kl_matches_definition_and_is_zero_on_equal_logits() -> None:
    torch.manual_seed(0)
    zs, zt, temp = torch.randn(5, 3), torch.randn(5, 3), 2.0
    pt, ps = torch.softmax(zt / temp, -1), torch.softmax(zs / temp, -1)
    expected = (pt * (pt.log() - ps.log())).sum(-1).mean() * temp**2
    assert logit_distillation_loss(zs, zt, temp).item() == pytest.approx(expected.item(), rel=1e-6)
    assert logit_distillation_loss(zt, zt, temp).item() == pytest.approx(0.0, abs=1e-7)


def test_token_level_logit_kl_is_masked() -> None:
    zs, zt = torch.zeros(1, 2, 3), torch.zeros(1, 2, 3)
    zt[0, 1] = torch.tensor([50.0, 0.0, 0.0])  # big disagreement only at the padded position
    assert logit_distillation_loss(zs, zt, 1.0, torch.tensor([[1, 0]])).item() == pytest.approx(0.0, abs=1e-7)


def test_bad_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="temperature"):
        DistillWeights(temperature=0.0)
    with pytest.raises(ValueError, match="nothing would be trained"):
        DistillWeights(task=0, logit=0, token=0)


def test_qa_position_kl_leaves_padding_out_of_both_softmaxes() -> None:
    """(batch, seq) start/end logits: padded positions take no part in either distribution."""
    torch.manual_seed(0)
    zs, zt, temp = torch.randn(3, 6), torch.randn(3, 6), 2.0
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    expected = []
    for row in range(3):
        real = mask[row].bool()
        pt, ps = torch.softmax(zt[row, real] / temp, -1), torch.softmax(zs[row, real] / temp, -1)
        expected.append((pt * (pt.log() - ps.log())).sum() * temp**2)
    got = logit_distillation_loss(zs, zt, temp, mask)
    assert got.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-6)
    # Whatever the models put at padded positions, the loss is the same.
    zs2, zt2 = zs.clone(), zt.clone()
    zs2[mask == 0], zt2[mask == 0] = 40.0, -25.0
    assert logit_distillation_loss(zs2, zt2, temp, mask).item() == pytest.approx(got.item(), rel=1e-6)
    # Equal on the real positions: no loss at all, and finite gradients (no NaN from the masked -inf).
    zs3 = zt.clone().masked_fill(mask == 0, 9.0).requires_grad_(True)
    loss = logit_distillation_loss(zs3, zt, temp, mask)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert zs3.grad is not None and torch.isfinite(zs3.grad).all() and (zs3.grad[mask == 0] == 0).all()


def test_regression_output_is_distilled_with_mse() -> None:
    s, t = torch.tensor([[1.0], [2.0], [0.5]]), torch.tensor([[0.0], [2.5], [0.5]])
    assert regression_distillation_loss(s, t).item() == pytest.approx((1.0 + 0.25 + 0.0) / 3)
    assert logit_distillation_loss(s, t, 2.0).item() == 0.0  # why not KL: one logit, softmax ≡ 1
    with pytest.raises(ValueError, match="teacher"):
        regression_distillation_loss(s, t[:2])


class _Fixed(nn.Module):
    """A stand-in network returning fixed output fields (the batch is ignored)."""

    def __init__(self, **outputs: torch.Tensor) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.outputs = outputs

    def forward(self, **_: Any) -> SimpleNamespace:
        return SimpleNamespace(loss=None, **{k: v * self.scale for k, v in self.outputs.items()})


def _logit_loss(student: nn.Module, teacher: nn.Module, batch: dict[str, torch.Tensor], **kwargs: Any) -> float:
    from ziplm.lit.module import ZipLMModule

    weights = DistillWeights(task=0.0, logit=1.0, token=0.0, temperature=2.0)
    module = ZipLMModule(student, teacher, weights, **kwargs)
    module.log = module.log_dict = lambda *a, **k: None  # type: ignore[method-assign]  # no Trainer here
    return float(module.training_step(batch, 0).detach())


def test_module_distills_a_regression_output_with_mse_and_refuses_a_one_logit_kl() -> None:
    s, t = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]])
    batch = {"input_ids": torch.zeros(2, 4, dtype=torch.long), "labels": torch.tensor([0.5, 1.5])}
    got = _logit_loss(_Fixed(logits=s), _Fixed(logits=t), batch, regression=True)
    assert got == pytest.approx((1.0 + 4.0) / 2)
    with pytest.raises(ValueError, match="regression=True"):
        _logit_loss(_Fixed(logits=s), _Fixed(logits=t), batch)


def test_module_masks_padding_out_of_qa_position_distributions() -> None:
    torch.manual_seed(1)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    batch = {"input_ids": torch.zeros(2, 5, dtype=torch.long), "attention_mask": mask}
    fields = {n: torch.randn(2, 5) for n in ("s_start", "s_end", "t_start", "t_end")}
    expected = (
        logit_distillation_loss(fields["s_start"], fields["t_start"], 2.0, mask)
        + logit_distillation_loss(fields["s_end"], fields["t_end"], 2.0, mask)
    ) / 2

    def loss() -> float:
        student = _Fixed(start_logits=fields["s_start"], end_logits=fields["s_end"])
        return _logit_loss(student, _Fixed(start_logits=fields["t_start"], end_logits=fields["t_end"]), batch)

    first = loss()
    assert first == pytest.approx(expected.item(), rel=1e-6)
    for name in fields:
        fields[name][mask == 0] = 30.0  # what a model puts at padding must not matter
    assert loss() == pytest.approx(first, rel=1e-6)
