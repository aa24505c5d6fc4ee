"""Stitch: one database level per layer and sublayer -> a physically pruned model."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from torch import nn

from ziplm.core.database import LevelDatabase
from ziplm.core.structure import Structure
from ziplm.models.adapter import set_output_weight
from ziplm.models.registry import adapter_for


def stitch(model: nn.Module, database: LevelDatabase, choice: Sequence[tuple[int, int]]) -> Any:
    """A pruned copy of `model` with the database's kept units and OBS-updated weights.

    Args:
        model: the model the database was built from (dense, or the current stage of a gradual run).
        database: its levels database.
        choice: per layer, ``(kept heads, kept neurons)`` — keys of the database's level grid.

    Returns:
        A new model (the input is left untouched) carrying the stitched structure.
    """
    adapter = adapter_for(model)
    dims = adapter.dims(model)
    if len(choice) != dims.num_layers:
        raise ValueError(f"choice has {len(choice)} layers, the model has {dims.num_layers}")
    entries = [
        (database.entry(i, "attention", heads), database.entry(i, "ffn", neurons))
        for i, (heads, neurons) in enumerate(choice)
    ]
    structure = Structure.from_kept(dims, [a.ids.tolist() for a, _ in entries], [f.ids.tolist() for _, f in entries])
    pruned = copy.deepcopy(model)
    adapter.apply_structure(pruned, structure)
    for i, (attention, ffn) in enumerate(entries):
        if attention.keep:
            set_output_weight(adapter, pruned, i, "attention", attention.weight)
        if ffn.keep:
            set_output_weight(adapter, pruned, i, "ffn", ffn.weight)
    return pruned
