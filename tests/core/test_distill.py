"""Distillation losses against direct formulas."""

from __future__ import annotations

import pytest
import torch

from ziplm.core.distill import DistillWeights, logit_distillation_loss, token_distillation_loss


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
