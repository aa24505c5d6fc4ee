"""What a levels database is built with and from: settings, fingerprint, and opening (resuming) one.

Shared by both database builders (`ziplm.pruning.database_builder` for the per-level solvers,
`ziplm.pruning.fisher` for the Fisher baselines), which import it; it imports neither of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ziplm.core.database import DatabaseFingerprint, LevelDatabase
from ziplm.models.adapter import current_structure
from ziplm.models.registry import adapter_for
from ziplm.pruning.methods import method
from ziplm.pruning.settings import DatabaseSettings as DatabaseSettings  # re-exported: their home is torch-free
from ziplm.pruning.settings import PrunerSettings as PrunerSettings

# Version of what a build stores, recorded in every fingerprint: bump it whenever a change to a solver
# (OBS, the baselines, Fisher), the error formula or the level grids changes the stored levels, so that a
# resumed run refuses levels computed by older code instead of mixing them in.
#   levels-v1: manifests written before this version was recorded.
#   levels-v2: the random baseline draws from the run's seed, independently per layer and sublayer.
DATABASE_FORMAT = "levels-v2"


def _digest_tensors(tensors: Sequence[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(str((tuple(t.shape), str(t.dtype))).encode())
        digest.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def fingerprint(
    model: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]], settings: DatabaseSettings
) -> DatabaseFingerprint:
    """What the database depends on: weights (and structure), calibration tokens, damping and grids."""
    adapter = adapter_for(model)
    dims = adapter.dims(model)
    state = model.state_dict()
    structure = str(current_structure(model, dims).to_dict()).encode()
    model_digest = hashlib.sha256(_digest_tensors([state[k] for k in sorted(state)]).encode() + structure)
    calibration = [t for b in batches for k in sorted(b) for t in [b[k]]]
    heads, ffn = settings.level_grids(dims.num_heads, dims.intermediate_size)
    return DatabaseFingerprint(
        model=model_digest.hexdigest()[:16],
        calibration=_digest_tensors(calibration),
        damp=settings.damp,
        head_levels=tuple(heads),
        ffn_levels=tuple(ffn),
        ffn_group_size=settings.ffn_group_size,
        dims=dims.to_dict(),
        method=settings.method,
        version=DATABASE_FORMAT,
        seed=settings.seed if method(settings.method).seeded else None,
    )


def sublayer_seed(seed: int, layer: int, sublayer: str) -> int:
    """A seed for one sublayer's random draw, derived from the run's: every sublayer draws independently."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{layer}/{sublayer}".encode()).digest()[:8], "little") >> 1


def open_database(
    model: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]], folder: str | Path, settings: DatabaseSettings
) -> tuple[LevelDatabase, list[int]]:
    """The database in `folder` for this model × data × settings, and the layers still to build (resume)."""
    database = LevelDatabase.open(folder, fingerprint(model, batches, settings))
    done = database.completed_layers()
    return database, [i for i in range(adapter_for(model).dims(model).num_layers) if i not in done]
