"""Compound compression of a (structurally pruned) family member: unstructured sparsity, then INT8.

ZipLM's members are dense, smaller transformers; on top of that, each matrix inside the transformer layers
(Q, K, V, attention out, FC1, FC2 — GPT-2's fused ``c_attn`` counts as one) can lose a fraction of its
single weights (:mod:`ziplm.core.unstructured`), and every ``nn.Linear`` can be quantized to INT8.

What each step buys on a CPU with stock PyTorch:

* **Unstructured zeros give no speedup**: PyTorch's dense CPU kernels multiply the zeros like any other
  value (the ZipLM paper's compound numbers used a sparsity-aware engine). They cost accuracy and only pay
  off in a sparse engine or a compressed file.
* **INT8 dynamic quantization does speed up** the matrix products (fbgemm/x86 int8 GEMMs, activations
  quantized on the fly per batch). Exact zeros stay exact zeros (symmetric weight quantization).

INT8 uses ``torch.ao.quantization.quantize_dynamic``. In torch 2.13 it still works on CPU but warns that
``torch.ao.quantization`` is deprecated in favour of the separate ``torchao`` package; we keep the built-in
path (no extra dependency) and silence that warning here. GPT-2's HF ``Conv1D`` is not an ``nn.Linear``, so
it is first rewritten as the equivalent ``nn.Linear`` (transposed weight), or it would stay fp32.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ziplm.core.hessian import hessian_hooks
from ziplm.core.unstructured import magnitude_unstructured, obs_unstructured
from ziplm.models.adapter import assign_linear_weight, unwrap_linear_weight
from ziplm.models.registry import adapter_for

UNSTRUCTURED_METHODS = ("none", "obs", "magnitude")


@dataclass(frozen=True)
class CompressionSettings:
    """What :func:`compress` does; validated on construction.

    Attributes:
        unstructured: none | obs (second-order, needs calibration batches) | magnitude.
        sparsity: Fraction of each matrix row set to zero, in [0, 1) (exact per row).
        int8: INT8 dynamic quantization of every ``nn.Linear`` afterwards (CPU only).
        damp: Relative Hessian damping for OBS.
        block_size: Columns per OBS mask-selection block.
    """

    unstructured: str = "none"
    sparsity: float = 0.0
    int8: bool = False
    damp: float = 0.01
    block_size: int = 128

    def __post_init__(self) -> None:
        if self.unstructured not in UNSTRUCTURED_METHODS:
            raise ValueError(f"unknown unstructured method {self.unstructured!r}; choose one of {UNSTRUCTURED_METHODS}")
        sparsity = self.sparsity
        if isinstance(sparsity, bool) or not isinstance(sparsity, int | float) or not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be a number in [0, 1) (fraction of weights set to zero), got {sparsity!r}")
        if self.unstructured == "none" and sparsity > 0:
            raise ValueError(f"sparsity={sparsity} needs an unstructured method: set unstructured to obs or magnitude")
        if not isinstance(self.int8, bool):
            raise ValueError(f"int8 must be true or false, got {self.int8!r}")
        if isinstance(self.damp, bool) or not isinstance(self.damp, int | float) or not 0 < self.damp < float("inf"):
            raise ValueError(f"damp must be a positive number, got {self.damp!r}")
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) or self.block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {self.block_size!r}")

    @property
    def prunes(self) -> bool:
        return self.unstructured != "none" and self.sparsity > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"  # HF's transposed linear (GPT-2); its weight is (d_in, d_out)


def layer_matrices(block: nn.Module) -> dict[str, nn.Module]:
    """The linear maps of one transformer block, by name (a removed sublayer contributes none)."""
    return {name: m for name, m in block.named_modules() if isinstance(m, nn.Linear) or _is_conv1d(m)}


class _StopForward(Exception):
    """Raised by a hook after the block being calibrated: later blocks' outputs are not needed."""


def _block_hessians(
    model: nn.Module, block: nn.Module, matrices: Mapping[str, nn.Module], batches: list[Mapping[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Input Hessians of `matrices` (all inside `block`) over `batches`, stopping each pass after `block`."""
    device = next(model.parameters()).device

    def stop(*_: Any) -> None:
        raise _StopForward

    handle = block.register_forward_hook(stop)
    try:
        with hessian_hooks(matrices) as (accumulators, token_mask), torch.no_grad():
            for batch in batches:
                inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
                token_mask.set(inputs.get("attention_mask"))
                with contextlib.suppress(_StopForward):
                    model(**inputs)
    finally:
        handle.remove()
    empty = [name for name, acc in accumulators.items() if acc.n_tokens == 0]
    if empty:
        raise ValueError(f"no calibration token reached {empty}: every position is masked as padding")
    return {name: acc.hessian() for name, acc in accumulators.items()}


def _prune_unstructured(
    model: nn.Module, batches: list[Mapping[str, torch.Tensor]], settings: CompressionSettings
) -> None:
    """In place, block by block in order.

    Sequential for OBS: block l's Hessians are collected with blocks < l already pruned, so each layer
    compensates the errors before it (as SparseGPT does). A pass stops right after block l, so the cost is
    about (L + 1) / 2 forward passes over the calibration set instead of one, which is seconds for the
    default 128 samples; one shared pass would make every layer blind to the earlier layers' errors.
    """
    for block in adapter_for(model).layers(model):
        matrices = layer_matrices(block)
        if not matrices:  # both sublayers removed: nothing left to prune
            continue
        hessians = _block_hessians(model, block, matrices, batches) if settings.unstructured == "obs" else {}
        for name, module in matrices.items():
            weight = unwrap_linear_weight(module)
            if settings.unstructured == "obs":
                pruned = obs_unstructured(weight, hessians[name], settings.sparsity, settings.damp, settings.block_size)
            else:
                pruned = magnitude_unstructured(weight, settings.sparsity)
            assign_linear_weight(module, pruned)


def _conv1d_as_linear(conv: nn.Module) -> nn.Linear:
    weight = conv.weight
    bias = conv.bias
    assert isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor)
    linear = nn.Linear(weight.shape[0], weight.shape[1], device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight.t())
        linear.bias.copy_(bias)
    return linear


def quantize_int8(model: nn.Module) -> nn.Module:
    """INT8 dynamic quantization of every ``nn.Linear`` (and GPT-2 ``Conv1D``), in place; returns the model.

    Raises:
        ValueError: If the model lives on a GPU (the quantized kernels are CPU only).
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("INT8 dynamic quantization runs on CPU only; move the model to CPU (hardware=cpu)")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _is_conv1d(child):
                setattr(parent, name, _conv1d_as_linear(child))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated.*")
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return quantized.eval()


def compress(
    model: nn.Module, calibration_batches: Iterable[Mapping[str, torch.Tensor]], settings: CompressionSettings
) -> nn.Module:
    """A compressed copy of `model` (BERT or GPT-2, possibly structurally pruned); `model` is untouched.

    Args:
        model: An HF model the adapters know.
        calibration_batches: Dicts of model inputs (``input_ids``, ``attention_mask``, …); only OBS reads them.
        settings: Which steps to run.

    Returns:
        The compressed model in eval mode: unstructured-pruned weights in place, then INT8 modules if asked.

    Raises:
        ValueError: OBS without calibration batches; INT8 on a GPU model.
    """
    batches = list(calibration_batches)
    if settings.prunes and settings.unstructured == "obs" and not batches:
        raise ValueError("unstructured OBS needs calibration batches; got none (set compression.calibration_samples)")
    out = copy.deepcopy(model).eval()
    if settings.prunes:
        _prune_unstructured(out, batches, settings)
    if settings.int8:
        out = quantize_int8(out)
    return out


@dataclass(frozen=True)
class SparsityReport:
    """Zero fractions of the matrices inside the transformer layers (what unstructured pruning touches).

    INT8 weights count a zero where the quantized value is 0, so tiny weights rounded to 0 count too.
    """

    matrices: dict[str, float]  # "layer.<i>.<module path>" -> fraction of zero weights
    zeros: int
    total: int

    @property
    def overall(self) -> float:
        return self.zeros / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall, "zeros": self.zeros, "total": self.total, "matrices": self.matrices}


def _dense_weight(module: nn.Module) -> torch.Tensor | None:
    """A module's weight as a float tensor (dequantized for INT8 modules); None for non-linear modules."""
    if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):
        return module.weight().dequantize()
    if isinstance(module, nn.Linear) or _is_conv1d(module):
        weight = module.weight
        assert isinstance(weight, torch.Tensor)
        return weight.detach()
    return None


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Per-matrix and overall fraction of exact zeros in the transformer layers' linear maps."""
    fractions: dict[str, float] = {}
    zeros = total = 0
    for i, block in enumerate(adapter_for(model).layers(model)):
        for name, module in block.named_modules():
            weight = _dense_weight(module)
            if weight is None:
                continue
            n_zero = int((weight == 0).sum())
            fractions[f"layer.{i}.{name}"] = n_zero / weight.numel()
            zeros += n_zero
            total += weight.numel()
    return SparsityReport(fractions, zeros, total)


def load_int8(member: nn.Module, state_dict_path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild an INT8 model saved as ``torch.save(model.state_dict())`` on top of its structured member.

    Quantized modules have no ``from_pretrained`` form; the member (``load_pruned``) gives the shapes, the
    state dict every value (packed INT8 weights, scales, zero points, the float rest).
    """
    model = quantize_int8(copy.deepcopy(member))
    with warnings.catch_warnings():  # torch's own unpickling of packed INT8 weights uses TypedStorage
        warnings.filterwarnings("ignore", message=r".*TypedStorage is deprecated.*")
        state = torch.load(state_dict_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
