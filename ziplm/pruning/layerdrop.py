"""Layer-dropping students (DistilBERT / DistilGPT2 / TinyBERT style): keep whole transformer layers only.

Two representations of the same function:

- `drop_to_identity` (what the pipeline uses): a dropped layer is a `Structure` layer with both
  sublayers removed. Post-LN BERT then skips the whole sublayers including residual-add + LayerNorm,
  pre-LN GPT-2 drops both residual branches: the layer is exactly x -> x and holds no parameters. The
  model keeps its L blocks, so save/load, the latency model, evaluation and export work unchanged.
- `drop_layers`: a real shorter ``ModuleList`` with ``num_hidden_layers`` = k, a plain HF model
  (stock ``save_pretrained``/``from_pretrained`` work) — e.g. to hand a dense student to other tools.

Both leave the teacher untouched. Distill such a student with `layer_pairs` (student layer ↔ teacher
layer), so each kept layer is matched to the teacher layer it was copied from.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from ziplm.core.latency import LatencyModel
from ziplm.core.structure import LayerStructure, ModelDims, Structure
from ziplm.models.adapter import STRUCTURE_CONFIG_KEY, current_structure, record_structure
from ziplm.models.registry import adapter_for


def check_keep(keep: Sequence[int], num_layers: int) -> list[int]:
    """Validate kept layer indices: non-empty, unique, within 0..L−1; returned sorted."""
    values = sorted(int(i) for i in keep)
    if not values:
        raise ValueError("keep lists no layer: a student needs at least one transformer layer")
    if len(set(values)) != len(values):
        raise ValueError(f"keep has duplicate layers: {list(keep)}")
    bad = [i for i in values if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f"keep has layers {bad} outside 0..{num_layers - 1} (the model has {num_layers} layers)")
    return values


def keep_every(n_layers: int, k: int) -> list[int]:
    """Every k-th layer starting at the first (DistilBERT: ``keep_every(12, 2)`` = [0, 2, …, 10])."""
    if n_layers < 1 or k < 1:
        raise ValueError(f"need n_layers >= 1 and k >= 1, got n_layers={n_layers}, k={k}")
    return list(range(0, n_layers, k))


def spread_layers(n_layers: int, count: int) -> list[int]:
    """`count` layers spread evenly from the first to the last (``spread_layers(12, 6)`` = DistilGPT2's
    [0, 2, 4, 7, 9, 11]); one layer keeps the first."""
    if not 1 <= count <= n_layers:
        raise ValueError(f"can keep 1..{n_layers} of {n_layers} layers, not {count}")
    if count == 1:
        return [0]
    return [math.floor(i * (n_layers - 1) / (count - 1) + 0.5) for i in range(count)]


def layerdrop_structure(structure: Structure, keep: Sequence[int]) -> Structure:
    """`structure` with every layer outside `keep` fully removed (both sublayers)."""
    kept = set(check_keep(keep, structure.dims.num_layers))
    empty = LayerStructure((), ())
    return Structure(structure.dims, tuple(la if i in kept else empty for i, la in enumerate(structure.layers)))


def drop_to_identity(model: nn.Module, keep: Sequence[int]) -> Any:
    """A copy of `model` whose layers outside `keep` are exact identities without parameters."""
    adapter = adapter_for(model)
    dims = adapter.dims(model)
    student = copy.deepcopy(model)
    adapter.apply_structure(student, layerdrop_structure(current_structure(model, dims), keep))
    return student


def _parent_of(model: nn.Module, child: nn.Module) -> tuple[nn.Module, str]:
    for module in model.modules():
        for name, value in module.named_children():
            if value is child:
                return module, name
    raise ValueError("the model's layer list is not one of its submodules")


def drop_layers(model: nn.Module, keep: Sequence[int]) -> Any:
    """A copy of `model` with only the layers in `keep` (a real shorter ``ModuleList``, weights copied).

    ``config.num_hidden_layers`` becomes len(keep) and each kept block's ``layer_idx`` (KV-cache slot)
    is renumbered; a pruned model's per-layer structure follows its layers.

    Raises:
        ValueError: bad `keep`, or GPT-2 with ``scale_attn_by_inverse_layer_idx`` and a non-prefix
            `keep` (the kept blocks' scaling depends on their old position, which a config cannot express).
    """
    adapter = adapter_for(model)
    dims = adapter.dims(model)
    kept = check_keep(keep, dims.num_layers)
    if getattr(model.config, "scale_attn_by_inverse_layer_idx", False) and kept != list(range(len(kept))):
        raise ValueError(
            "this GPT-2 scales attention by 1/(layer index + 1): dropped layers would change the kept layers' "
            "scaling after a reload; keep a prefix of layers or use drop_to_identity"
        )
    student = copy.deepcopy(model)
    layers = adapter.layers(student)
    parent, name = _parent_of(student, layers)
    setattr(parent, name, nn.ModuleList([layers[i] for i in kept]))
    for position, block in enumerate(adapter.layers(student)):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                setattr(module, "layer_idx", position)  # noqa: B010 (a plain int attribute, not a submodule)
    config: Any = student.config
    config.num_hidden_layers = len(kept)  # GPT-2 maps this onto n_layer
    if getattr(model.config, STRUCTURE_CONFIG_KEY, None):
        old = current_structure(model, dims)
        new_dims = ModelDims(**{**dims.to_dict(), "num_layers": len(kept)})
        record_structure(student, Structure(new_dims, tuple(old.layers[i] for i in kept)))
    return student


def distillation_pairs(keep: Sequence[int], shorter: bool) -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs for token distillation: each kept layer ↔ the layer it was
    copied from — student layer i ↔ teacher ``keep[i]`` for a `drop_layers` student (``shorter``), layer
    ``keep[i]`` ↔ itself for a `drop_to_identity` one (its dropped layers only repeat hidden states)."""
    kept = sorted(int(i) for i in keep)
    return [(i if shorter else layer, layer) for i, layer in enumerate(kept)]


def layer_count_speedups(latency: LatencyModel, dims: ModelDims) -> dict[int, float]:
    """Predicted speedup of keeping k = 1..L whole layers (the additive model does not care which)."""
    dense = (dims.num_heads, dims.intermediate_size)
    return {k: latency.speedup([dense] * k + [(0, 0)] * (dims.num_layers - k)) for k in range(1, dims.num_layers + 1)}


def choose_layer_count(latency: LatencyModel, dims: ModelDims, target: float) -> tuple[int, float]:
    """The kept-layer count whose predicted speedup is closest to `target` (ties: more layers), and it."""
    speedups = layer_count_speedups(latency, dims)
    k = min(speedups, key=lambda n: (round(abs(speedups[n] - target), 12), -n))  # float-noise ties count
    return k, speedups[k]
