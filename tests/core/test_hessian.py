"""Hessian accumulation: exact running mean, padding masks, hook lifetime, empty calibration sets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ziplm.core.hessian as hessian_module
from ziplm.core.hessian import HessianAccumulator, TokenMask, capture_hessians, hessian_hooks

F64 = torch.float64


def assert_gram_close(got: torch.Tensor, want: torch.Tensor) -> None:
    """fp32 inputs get an fp32 Gram per chunk (fp64 running mean): agree to 1e-6 of H's scale."""
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6 * float(want.abs().max()))


@pytest.fixture(autouse=True)
def _single_thread():
    """These matrices are tiny: intra-op threads only add synchronisation, which stalls badly when
    another process holds a core."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def direct_hessian(tokens: torch.Tensor) -> torch.Tensor:
    """2 XᵀX / N for (N, d_in) tokens, in float64."""
    t = tokens.to(F64)
    return 2 * t.T @ t / t.shape[0]


class TransposedConv1D(nn.Module):
    """GPT-2's Conv1D: y = x W + b with W stored as (d_in, d_out)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], -1)


def padded_batches(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three (batch, seq, 12) batches with (batch, seq) masks; padding positions hold huge values."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for batch, seq in [(2, 7), (3, 5), (1, 9)]:
        x = torch.randn(batch, seq, 12, generator=gen)
        lengths = torch.randint(1, seq + 1, (batch,), generator=gen)
        mask = torch.arange(seq)[None, :] < lengths[:, None]
        x[~mask] = 1e6  # would dominate H if padding leaked in
        batches.append((x, mask))
    return batches


def test_running_mean_equals_direct_computation_on_real_tokens(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(hessian_module, "_CHUNK_TOKENS", 4)  # exercise the chunked path
    batches = padded_batches(seed=0)
    acc = HessianAccumulator(d_in=12)
    for x, mask in batches:
        acc.add_batch(x, mask.int())  # 0/1 masks work like bool masks
    real = torch.cat([x[mask] for x, mask in batches])
    assert acc.n_tokens == real.shape[0]
    assert_gram_close(acc.hessian(), direct_hessian(real))
    assert acc.hessian().dtype == F64


def test_flat_tokens_without_mask():
    x = torch.randn(50, 6, dtype=F64)
    acc = HessianAccumulator()
    acc.add_batch(x[:20])
    acc.add_batch(x[20:])
    assert acc.d_in == 6 and acc.n_tokens == 50
    assert_gram_close(acc.hessian(), direct_hessian(x))


def test_shape_and_mask_mismatches_raise():
    acc = HessianAccumulator(d_in=4)
    with pytest.raises(ValueError, match=r"expected inputs of shape \(\.\.\., 4\)"):
        acc.add_batch(torch.randn(3, 5))
    with pytest.raises(ValueError, match="does not match the 6 tokens"):
        acc.add_batch(torch.randn(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="d_in must be a positive int"):
        HessianAccumulator(d_in=0)


def test_empty_calibration_set_raises():
    with pytest.raises(RuntimeError, match="empty calibration set"):
        HessianAccumulator(d_in=3).hessian()
    acc = HessianAccumulator()
    acc.add_batch(torch.randn(2, 4, 3), torch.zeros(2, 4, dtype=torch.bool))  # all padding
    with pytest.raises(RuntimeError, match="empty calibration set"):
        acc.hessian()


def make_model() -> tuple[nn.Module, nn.Linear, TransposedConv1D]:
    torch.manual_seed(0)
    fc = nn.Linear(12, 16)
    conv = TransposedConv1D(16, 8)
    return nn.Sequential(fc, nn.GELU(), conv), fc, conv


def test_capture_hessians_with_masks_for_linear_and_conv1d():
    model, fc, conv = make_model()
    batches = padded_batches(seed=1)

    def run_batches(token_mask: TokenMask) -> None:
        for x, mask in batches:
            token_mask.set(mask)
            model(x)

    hessians = capture_hessians({"fc": fc, "conv": conv}, run_batches)
    real = torch.cat([x[mask] for x, mask in batches])
    with torch.no_grad():
        assert_gram_close(hessians["fc"], direct_hessian(real))
        hidden = nn.functional.gelu(fc(real))
        torch.testing.assert_close(hessians["conv"], direct_hessian(hidden), rtol=1e-5, atol=1e-8)
    assert not fc._forward_pre_hooks and not conv._forward_pre_hooks


def test_hooks_are_removed_when_the_loop_fails():
    model, fc, conv = make_model()

    def failing(token_mask: TokenMask) -> None:
        model(torch.randn(2, 3, 12))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        capture_hessians({"fc": fc, "conv": conv}, failing)
    assert not fc._forward_pre_hooks and not conv._forward_pre_hooks


def test_module_never_called_reports_empty_calibration_set():
    _, fc, conv = make_model()
    with pytest.raises(RuntimeError, match="empty calibration set"):
        capture_hessians({"fc": fc, "conv": conv}, lambda token_mask: fc(torch.randn(4, 12)))


def test_hessian_hooks_context_manager_without_mask():
    model, fc, _ = make_model()
    x = torch.randn(5, 12)
    with hessian_hooks({"fc": fc}) as (accumulators, token_mask), torch.no_grad():
        assert token_mask.current is None
        model(x)
    assert_gram_close(accumulators["fc"].hessian(), direct_hessian(x))
    assert not fc._forward_pre_hooks


def test_float64_inputs_are_accumulated_exactly() -> None:
    x = torch.randn(3, 40, 12, dtype=torch.float64)
    acc = HessianAccumulator()
    acc.add_batch(x)
    flat = x.reshape(-1, 12)
    torch.testing.assert_close(acc.hessian(), 2 * flat.T @ flat / flat.shape[0], rtol=1e-12, atol=0)
