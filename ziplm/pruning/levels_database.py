"""What a levels database is built with and from: settings, fingerprint, and opening (resuming) one.

Shared by both database builders (`ziplm.pruning.database_builder` for the per-level solvers,
`ziplm.pruning.fisher` for the Fisher baselines), which import it; it imports neither of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ziplm.core.database import DatabaseFingerprint, LevelDatabase
from ziplm.core.levels import level_grids
from ziplm.models.adapter import current_structure
from ziplm.models.registry import adapter_for
from ziplm.pruning.methods import method

# Version of what a build stores, recorded in every fingerprint: bump it whenever a change to a solver
# (OBS, the baselines, Fisher), the error formula or the level grids changes the stored levels, so that a
# resumed run refuses levels computed by older code instead of mixing them in.
#   levels-v1: manifests written before this version was recorded.
#   levels-v2: the random baseline draws from the run's seed, independently per layer and sublayer.
DATABASE_FORMAT = "levels-v2"


@dataclass
class PrunerSettings:
    """The ``pruner`` config group (``conf/pruner/*.yaml``): how structures are selected and scored."""

    # Which rule picks the removed structures: obs (ZipLM) | magnitude | random | fisher | fisher-norescale
    # (Kwon et al. 2022, with / without least-squares mask tuning) | layerdrop (whole layers, DistilBERT-style)
    method: str = "obs"
    damp: float = 0.01  # relative Hessian dampening
    calibration_samples: int = 1024  # training samples whose activations build the Hessians
    ffn_group_size: int = 1  # FFN neurons pruned together
    ffn_grid_ratio: float = 0.9  # geometric ratio of the FFN level grid
    ffn_round_to: int = 1  # FFN levels rounded to multiples of this (1 = no rounding)


@dataclass(frozen=True)
class DatabaseSettings:
    """Knobs of a database build (all recorded in its fingerprint)."""

    damp: float = 0.01
    ffn_group_size: int = 1
    ffn_grid_ratio: float = 0.9
    ffn_round_to: int = 1
    method: str = "obs"  # a name in ziplm.pruning.methods.REGISTRY: obs = ZipLM, the others are baselines
    seed: int = 0  # the run's seed: draws the random baseline's structures (no effect on unseeded methods)

    @classmethod
    def from_pruner(cls, pruner: PrunerSettings, seed: int = 0) -> DatabaseSettings:
        """The settings a run's ``pruner`` config group gives (the latency table reads its grids here too)."""
        return cls(
            damp=float(pruner.damp),
            ffn_group_size=int(pruner.ffn_group_size),
            ffn_grid_ratio=float(pruner.ffn_grid_ratio),
            ffn_round_to=int(pruner.ffn_round_to),
            method=str(pruner.method),
            seed=int(seed),
        )

    def level_grids(self, num_heads: int, d_ff: int) -> tuple[list[int], list[int]]:
        """(head, FFN) level grids: what the database stores and the latency table times."""
        return level_grids(num_heads, d_ff, self.ffn_grid_ratio, self.ffn_round_to, self.ffn_group_size)


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
