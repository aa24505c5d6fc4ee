"""Pooling and the label-free distortion/distillation terms, against hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from ziplm.core.embedding import (
    Pooling,
    cosine_distance,
    embedding_distillation_loss,
    embedding_distortion,
    normalized_mse,
    pool,
)

# Two texts, three positions, two dims; the second text's last position is padding (a huge value that
# must not leak into any pooled vector).
STATES = torch.tensor(
    [
        [[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]],
        [[2.0, -2.0], [0.0, 6.0], [100.0, 100.0]],
    ]
)
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def test_mean_pooling_averages_real_tokens_only() -> None:
    out = pool(STATES, MASK, Pooling("mean"))
    assert torch.allclose(out, torch.tensor([[3.0, 2.0], [1.0, 2.0]]))


def test_cls_and_max_pooling() -> None:
    assert torch.equal(pool(STATES, MASK, Pooling("cls")), torch.tensor([[1.0, 2.0], [2.0, -2.0]]))
    assert torch.equal(pool(STATES, MASK, Pooling("max")), torch.tensor([[5.0, 4.0], [2.0, 6.0]]))


def test_normalize_gives_unit_vectors_in_the_mean_direction() -> None:
    out = pool(STATES, MASK, Pooling("mean", normalize=True))
    expected = torch.tensor([[3.0, 2.0], [1.0, 2.0]]) / torch.tensor([[13.0], [5.0]]).sqrt()
    assert torch.allclose(out, expected)


def test_no_mask_means_every_token_counts() -> None:
    out = pool(STATES, None, Pooling("mean"))
    assert torch.allclose(out[1], torch.tensor([102.0 / 3, 104.0 / 3]))


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown pooling mode 'sqrt'"):
        Pooling("sqrt")


def test_cosine_distance_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [2.0, 2.0]])  # orthogonal (1 - 0), then parallel (1 - 1)
    assert float(cosine_distance(a, b)) == pytest.approx(0.5)


def test_normalized_mse_by_hand_with_padding() -> None:
    dense = torch.tensor([[[1.0, 1.0], [2.0, 0.0]]])
    student = torch.tensor([[[1.0, 0.0], [50.0, 50.0]]])  # second position is padding
    mask = torch.tensor([[1, 0]])
    # error of the real token: ((0)^2 + (1)^2) / 2 = 0.5; energy: (1 + 1) / 2 = 1
    assert float(normalized_mse(student, dense, mask)) == pytest.approx(0.5)


def test_distortion_is_zero_for_the_dense_model_and_matches_hand_computation() -> None:
    pooling = Pooling("mean", normalize=True)
    assert embedding_distortion([STATES], [STATES], [MASK], pooling) == pytest.approx(0.0, abs=1e-6)
    student = STATES.clone()
    student[0, :, 1] = 0.0  # text 0's mean becomes (3, 0): cos with (3, 2) is 3 / sqrt(13)
    cos_term = (1 - 3 / math.sqrt(13)) / 2  # text 1 unchanged
    # token term: the changed second dim of text 0, errors 2^2, 4^2, 0 over 3 tokens x 2 dims;
    # energies: all real tokens (5 of them) of the dense states.
    error = (4 + 16 + 0) / 2
    energy = sum(float((STATES[b, t] ** 2).mean()) for b, t in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)])
    expected = cos_term + error / energy
    assert embedding_distortion([student], [STATES], [MASK], pooling) == pytest.approx(expected, rel=1e-6)


def test_distortion_needs_matching_batches() -> None:
    with pytest.raises(ValueError, match="same positive number"):
        embedding_distortion([STATES], [], [MASK], Pooling())


def test_distillation_loss_by_hand_and_its_gradient_closes_the_gap() -> None:
    dense = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    student = torch.tensor([[0.0, 1.0], [0.0, 2.0]])  # first orthogonal, second equal
    # cos term (1 + 0) / 2; MSE (1 + 1 + 0 + 0) / 4 over the dense mean square (1 + 4) / 4
    assert float(embedding_distillation_loss(student, dense)) == pytest.approx(0.5 + 0.5 / 1.25)
    weights = torch.nn.Parameter(torch.randn(4, 2))
    inputs = torch.randn(8, 4)
    target = inputs @ torch.randn(4, 2)
    optimizer = torch.optim.Adam([weights], lr=0.05)
    losses = []
    for _ in range(200):
        loss = embedding_distillation_loss(inputs @ weights, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.01 * losses[0]  # a linear map can match exactly
