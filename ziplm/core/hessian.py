"""Layer-input Hessians H = mean(2 x xᵀ) from calibration data, accumulated on the fly (spec §2).

The OBS objective ‖W X − Ŵ X‖² of one linear map depends on the calibration inputs only through
H = 2 X Xᵀ / N, so we never store activations: a forward pre-hook folds each batch into a float64 running
mean and drops it. Padding tokens are excluded (their inputs are not part of any real sequence and
would bias H towards whatever the model does on ``[PAD]``).

Typical use::

    with hessian_hooks({"layer.0.fc2": fc2}) as (accumulators, token_mask):
        for batch in loader:
            token_mask.set(batch["attention_mask"])
            model(**batch)
    H = accumulators["layer.0.fc2"].hessian()

or :func:`capture_hessians`, which wraps the same in one call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["HessianAccumulator", "TokenMask", "capture_hessians", "hessian_hooks"]

_CHUNK_TOKENS = 4096  # tokens converted to float64 at a time: bounds the extra memory per batch


class HessianAccumulator:
    """Running mean of ``2 x xᵀ`` over the calibration tokens of one linear map's input.

    Accumulated in float64: a float32 running sum over 10⁵–10⁶ tokens loses the small eigenvalues
    that OBS divides by.

    Args:
        d_in: Input width; inferred from the first batch if None.
        device: Where H lives; the device of the first batch if None.
    """

    def __init__(self, d_in: int | None = None, device: torch.device | str | None = None) -> None:
        if d_in is not None and (isinstance(d_in, bool) or not isinstance(d_in, int) or d_in < 1):
            raise ValueError(f"d_in must be a positive int, got {d_in!r}")
        self.d_in = d_in
        self.device = torch.device(device) if device is not None else None
        self.n_tokens = 0
        self._H: torch.Tensor | None = None

    def add_batch(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Folds a batch of inputs into the running mean.

        Args:
            x: (..., d_in) inputs, e.g. (batch, seq, d_in) or (n, d_in).
            mask: Optional (...) bool or 0/1 tensor with x's leading shape (or as many elements);
                tokens where it is false/0 (padding) are skipped.
        """
        if x.dim() < 1 or (self.d_in is not None and x.shape[-1] != self.d_in):
            raise ValueError(f"expected inputs of shape (..., {self.d_in}), got {tuple(x.shape)}")
        tokens = x.detach().reshape(-1, x.shape[-1])
        if mask is not None:
            if mask.numel() != tokens.shape[0]:
                raise ValueError(
                    f"mask of shape {tuple(mask.shape)} does not match the {tokens.shape[0]} tokens of "
                    f"inputs of shape {tuple(x.shape)}"
                )
            tokens = tokens[mask.detach().reshape(-1).to(device=tokens.device, dtype=torch.bool)]
        if self._H is None:
            self.d_in = x.shape[-1]
            if self.device is None:
                self.device = x.device
            self._H = torch.zeros(self.d_in, self.d_in, dtype=torch.float64, device=self.device)
        for chunk in tokens.split(_CHUNK_TOKENS):
            self._add_tokens(self._H, chunk.to(device=self._H.device))

    def _add_tokens(self, H: torch.Tensor, tokens: torch.Tensor) -> None:
        m = tokens.shape[0]
        if m == 0:
            return
        total = self.n_tokens + m
        # The Gram matrix of one chunk (≤ 4096 tokens) in the inputs' precision is 1.7× faster than in
        # fp64 on CPU and only sums a few thousand products; the running mean over chunks stays fp64.
        gram = tokens.T @ tokens if tokens.dtype == torch.float32 else tokens.double().T @ tokens.double()
        # Running mean: H ← (n/(n+m))·H + (2/(n+m))·XᵀX; keeps H at the scale of one token.
        H.mul_(self.n_tokens / total).add_(gram.double(), alpha=2.0 / total)
        self.n_tokens = total

    def sum_and_count(self) -> tuple[torch.Tensor | None, int]:
        """(Σ 2 x xᵀ over the tokens seen, their number): what adds up across processes."""
        if self._H is None:
            return None, 0
        return self._H * self.n_tokens, self.n_tokens

    @classmethod
    def from_sum(cls, total: torch.Tensor, n_tokens: int) -> HessianAccumulator:
        """The accumulator whose tokens' Σ 2 x xᵀ is `total` (e.g. summed over the ranks of a run)."""
        acc = cls(int(total.shape[0]) if total.numel() else None, total.device)
        if n_tokens > 0:
            acc._H, acc.n_tokens = total.double() / n_tokens, n_tokens
        return acc

    def hessian(self) -> torch.Tensor:
        """Returns a copy of H, (d_in, d_in) float64.

        Raises:
            RuntimeError: If no (non-padding) token was ever added.
        """
        if self._H is None or self.n_tokens == 0:
            raise RuntimeError(
                "empty calibration set: no tokens were added to this Hessian (no forward pass reached the "
                "module, or every token was masked as padding)"
            )
        return self._H.clone()


def output_energy(output: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Σ over non-padding tokens of ‖y‖² for a projection's output `y` (..., d_out): the denominator of the
    relative output error a levels database reports."""
    flat = output.detach().reshape(-1, output.shape[-1])
    if mask is not None:
        flat = flat[mask.reshape(-1).to(device=flat.device, dtype=torch.bool)]
    return float(flat.double().pow(2).sum())


class TokenMask:
    """The current batch's padding mask, set by the caller before each forward pass.

    Hooks run deep inside the model and cannot see the batch; this holder is how they get its mask.
    ``None`` means every token counts.
    """

    def __init__(self) -> None:
        self.current: torch.Tensor | None = None

    def set(self, mask: torch.Tensor | None) -> None:
        """Sets the (batch, seq) mask (1/True = real token) for the next forward pass(es)."""
        self.current = mask


@contextmanager
def hessian_hooks(
    modules: Mapping[str, nn.Module], device: torch.device | str | None = None
) -> Iterator[tuple[dict[str, HessianAccumulator], TokenMask]]:
    """Accumulates the input Hessians of ``modules`` while the ``with`` block runs forward passes.

    Works for any module whose first forward argument is (..., d_in): ``nn.Linear``, GPT-2 ``Conv1D``.
    The hooks are removed on exit, also when the block raises.

    Args:
        modules: Name → module whose input Hessian is wanted.
        device: Where the Hessians live (default: the device of the inputs).

    Yields:
        (accumulators by name, the :class:`TokenMask` to set per batch).
    """
    token_mask = TokenMask()
    accumulators = {name: HessianAccumulator(device=device) for name in modules}
    handles = []

    def make_hook(acc: HessianAccumulator) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                raise TypeError(f"{type(module).__name__} was called without a positional input tensor")
            acc.add_batch(args[0], token_mask.current)

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_pre_hook(make_hook(accumulators[name])))
        yield accumulators, token_mask
    finally:
        for handle in handles:
            handle.remove()


def capture_hessians(
    modules: Mapping[str, nn.Module],
    run_batches: Callable[[TokenMask], None],
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Runs the caller's calibration loop once and returns the input Hessian of every module.

    Args:
        modules: Name → module (nn.Linear, Conv1D, …) whose input Hessian is wanted.
        run_batches: Runs the forward passes; calls ``token_mask.set(attention_mask)`` before each one
            (or never, if there is no padding). Gradients are disabled while it runs.
        device: Where the Hessians live (default: the device of the inputs).

    Returns:
        Name → (d_in, d_in) float64 H = mean over non-padding tokens of 2 x xᵀ.

    Raises:
        RuntimeError: If a module saw no tokens ("empty calibration set").
    """
    with hessian_hooks(modules, device) as (accumulators, token_mask), torch.no_grad():
        run_batches(token_mask)
    return {name: acc.hessian() for name, acc in accumulators.items()}
