"""What survives pruning: kept attention heads and kept FFN neurons per layer.

A `Structure` is the contract between the pruning engine (which decides) and the model adapters
(which perform physical surgery). Ids always refer to the *original* dense model's numbering, so a
structure stays meaningful after a model has already been pruned (gradual schedules re-prune).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelDims:
    """Shape facts of a dense model that structures are validated against."""

    num_layers: int
    num_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int

    def to_dict(self) -> dict[str, int]:
        return {
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
        }


@dataclass(frozen=True)
class LayerStructure:
    """Kept heads and neurons of one layer (sorted original ids). Empty means the module is removed."""

    heads: tuple[int, ...]
    neurons: tuple[int, ...]

    @property
    def attention_removed(self) -> bool:
        return not self.heads

    @property
    def ffn_removed(self) -> bool:
        return not self.neurons


def _sorted_unique_ids(ids: Iterable[int], limit: int, what: str, layer: int) -> tuple[int, ...]:
    values = [int(i) for i in ids]
    if len(set(values)) != len(values):
        raise ValueError(f"layer {layer}: duplicate {what} ids in {sorted(values)}")
    bad = [i for i in values if not 0 <= i < limit]
    if bad:
        raise ValueError(f"layer {layer}: unknown {what} ids {bad}; valid ids are 0..{limit - 1}")
    return tuple(sorted(values))


@dataclass(frozen=True)
class Structure:
    """Per-layer kept heads / neurons of a model with dims `dims`."""

    dims: ModelDims
    layers: tuple[LayerStructure, ...]

    def __post_init__(self) -> None:
        if len(self.layers) != self.dims.num_layers:
            raise ValueError(
                f"structure has {len(self.layers)} layers but the model has {self.dims.num_layers}: "
                "it was made for a different model"
            )
        for i, layer in enumerate(self.layers):
            _sorted_unique_ids(layer.heads, self.dims.num_heads, "head", i)
            _sorted_unique_ids(layer.neurons, self.dims.intermediate_size, "neuron", i)

    @classmethod
    def dense(cls, dims: ModelDims) -> Structure:
        """The structure that keeps everything."""
        layer = LayerStructure(tuple(range(dims.num_heads)), tuple(range(dims.intermediate_size)))
        return cls(dims, tuple(layer for _ in range(dims.num_layers)))

    @classmethod
    def from_kept(cls, dims: ModelDims, heads: Sequence[Iterable[int]], neurons: Sequence[Iterable[int]]) -> Structure:
        """Build from per-layer kept id lists, validating ids (unknown or duplicate ids raise)."""
        if len(heads) != dims.num_layers or len(neurons) != dims.num_layers:
            raise ValueError(
                f"expected kept heads and neurons for {dims.num_layers} layers, "
                f"got {len(heads)} and {len(neurons)}: the structure is for a different model"
            )
        layers = tuple(
            LayerStructure(
                _sorted_unique_ids(h, dims.num_heads, "head", i),
                _sorted_unique_ids(n, dims.intermediate_size, "neuron", i),
            )
            for i, (h, n) in enumerate(zip(heads, neurons, strict=True))
        )
        return cls(dims, layers)

    def is_subset_of(self, other: Structure) -> bool:
        """True if every kept head/neuron here is also kept in `other` (re-pruning only removes)."""
        return self.dims == other.dims and all(
            set(a.heads) <= set(b.heads) and set(a.neurons) <= set(b.neurons)
            for a, b in zip(self.layers, other.layers, strict=True)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (stored in the HF config as ``ziplm_structure``)."""
        return {
            "dims": self.dims.to_dict(),
            "layers": [{"heads": list(la.heads), "neurons": list(la.neurons)} for la in self.layers],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Structure:
        try:
            dims = ModelDims(**{k: int(v) for k, v in data["dims"].items()})
            layers = data["layers"]
            return cls.from_kept(dims, [la["heads"] for la in layers], [la["neurons"] for la in layers])
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed structure record ({err!r}); expected keys 'dims' and 'layers'") from err
