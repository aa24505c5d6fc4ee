"""The model-family adapter protocol: the only place that knows HF module names.

Adding a family means one new file implementing `ModelAdapter` and one entry in `ADAPTERS`; nothing in
the core or the pipelines changes. A family whose sublayers are not laid out like BERT/GPT-2's also
defines ``sublayer_parameter_counts(model, structure)`` (see `adapter_parameter_counts`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

import torch
from torch import nn

from ziplm.core.structure import ModelDims, Structure

Sublayer = Literal["attention", "ffn"]
SUBLAYERS: tuple[Sublayer, Sublayer] = ("attention", "ffn")
STRUCTURE_CONFIG_KEY = "ziplm_structure"


class ModelAdapter(Protocol):
    """Family-specific knowledge needed to prune a model. All methods take the full HF model."""

    family: str

    def dims(self, model: nn.Module) -> ModelDims:
        """Dims of the *dense* model (from its config, unaffected by pruning)."""
        ...

    def apply_structure(self, model: nn.Module, structure: Structure) -> None:
        """Physically remove everything not kept in `structure`, in place.

        `structure` must be a subset of the model's current structure; ids are original ids.
        """
        ...

    def output_projection(self, model: nn.Module, layer: int, sublayer: Sublayer) -> nn.Module | None:
        """The last linear map of a sublayer (its input columns are what OBS prunes); None if removed."""
        ...

    def layers(self, model: nn.Module) -> nn.ModuleList:
        """The transformer blocks, in order."""
        ...


def current_structure(model: nn.Module, dims: ModelDims) -> Structure:
    """The structure a (possibly already pruned) model carries; dense if it was never pruned."""
    record = getattr(model.config, STRUCTURE_CONFIG_KEY, None)
    return Structure.from_dict(record) if record else Structure.dense(dims)


def record_structure(model: nn.Module, structure: Structure) -> None:
    """Store the structure in the HF config so it travels with save/load."""
    setattr(model.config, STRUCTURE_CONFIG_KEY, structure.to_dict())


def check_reachable(current: Structure, target: Structure) -> None:
    """Surgery can only remove: refuse a target that keeps something already gone."""
    if target.dims != current.dims:
        raise ValueError(
            f"structure is for a model with dims {target.dims.to_dict()}, but this model has {current.dims.to_dict()}"
        )
    for i, (cur, new) in enumerate(zip(current.layers, target.layers, strict=True)):
        gone_heads = sorted(set(new.heads) - set(cur.heads))
        gone_neurons = sorted(set(new.neurons) - set(cur.neurons))
        if gone_heads or gone_neurons:
            raise ValueError(
                f"layer {i}: structure keeps heads {gone_heads} / neurons {gone_neurons[:10]} "
                "that this model has already pruned away"
            )


def positions(current: tuple[int, ...], kept: tuple[int, ...]) -> list[int]:
    """Positions of the `kept` original ids inside the model's current (already sliced) ordering."""
    index = {orig: pos for pos, orig in enumerate(current)}
    return [index[i] for i in kept]


PruneAttention = Callable[[Any, int, list[int]], None]
"""(block, layer index, positions of the heads to keep in its current order) -> None: slices one block."""
PruneFfn = Callable[[Any, list[int]], None]
"""(block, positions of the neurons to keep) -> None."""


def apply_per_layer(
    adapter: ModelAdapter,
    model: nn.Module,
    structure: Structure,
    prune_attention: PruneAttention,
    prune_ffn: PruneFfn,
) -> None:
    """The surgery loop every family shares: refuse an unreachable target, slice in each block only what
    changed (positions in its current order), record the structure. Families supply the two slicers."""
    dims = adapter.dims(model)
    current = current_structure(model, dims)
    check_reachable(current, structure)
    for index, (block, cur, new) in enumerate(
        zip(adapter.layers(model), current.layers, structure.layers, strict=True)
    ):
        if new.heads != cur.heads:
            prune_attention(block, index, positions(cur.heads, new.heads))
        if new.neurons != cur.neurons:
            prune_ffn(block, positions(cur.neurons, new.neurons))
    record_structure(model, structure)


def sublayer_parameter_counts(dims: ModelDims, structure: Structure) -> list[dict[str, int]]:
    """Parameters of each layer's attention and FFN sublayer implied by `structure`.

    Both families have, per sublayer: Q/K/V (or FC1) weights + biases, the output projection weight +
    bias, and one LayerNorm (post-LN for BERT, pre-LN for GPT-2); a removed sublayer has none.
    """
    h, hd = dims.hidden_size, dims.head_dim
    layer_norm = 2 * h
    counts = []
    for layer in structure.layers:
        width = len(layer.heads) * hd
        attention = 3 * (h * width + width) + width * h + h + layer_norm if layer.heads else 0
        m = len(layer.neurons)
        ffn = h * m + m + m * h + h + layer_norm if layer.neurons else 0
        counts.append({"attention": attention, "ffn": ffn})
    return counts


def adapter_parameter_counts(adapter: ModelAdapter, model: nn.Module, structure: Structure) -> list[dict[str, int]]:
    """Per-layer sublayer parameters: the adapter's own count if it has one, else the BERT/GPT-2 formula.

    Families whose layout differs (GQA, SwiGLU, RMSNorm, missing biases) define
    ``sublayer_parameter_counts(model, structure)``; it reads biases and widths from ``model.config``.
    """
    own = getattr(adapter, "sublayer_parameter_counts", None)
    if own is not None:
        return own(model, structure)  # type: ignore[no-any-return]
    return sublayer_parameter_counts(structure.dims, structure)


def unwrap_linear_weight(module: nn.Module) -> torch.Tensor:
    """Weight in nn.Linear layout (d_out, d_in); HF's Conv1D stores it transposed."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight.detach().t().clone() if type(module).__name__ == "Conv1D" else weight.detach().clone()


def assign_linear_weight(module: nn.Module, weight: torch.Tensor) -> None:
    """Copy a (d_out, d_in) weight into a Linear or a transposed Conv1D, checking the shape."""
    target = module.weight
    assert isinstance(target, torch.Tensor)
    value = weight.t() if type(module).__name__ == "Conv1D" else weight
    if value.shape != target.shape:
        raise ValueError(f"weight of shape {tuple(weight.shape)} does not fit {type(module).__name__} {target.shape}")
    with torch.no_grad():
        target.copy_(value.to(target.dtype))


def _projection_or_raise(adapter: ModelAdapter, model: nn.Module, layer: int, sublayer: Sublayer) -> nn.Module:
    module = adapter.output_projection(model, layer, sublayer)
    if module is None:
        raise ValueError(f"layer {layer} {sublayer} has been removed; it has no output projection")
    return module


def get_output_weight(adapter: ModelAdapter, model: nn.Module, layer: int, sublayer: Sublayer) -> torch.Tensor:
    """A detached copy of a sublayer's output-projection weight in nn.Linear layout (d_out, d_in)."""
    return unwrap_linear_weight(_projection_or_raise(adapter, model, layer, sublayer))


def set_output_weight(
    adapter: ModelAdapter, model: nn.Module, layer: int, sublayer: Sublayer, weight: torch.Tensor
) -> None:
    """Overwrite a sublayer's output-projection weight, given in nn.Linear layout (d_out, d_in)."""
    assign_linear_weight(_projection_or_raise(adapter, model, layer, sublayer), weight)
