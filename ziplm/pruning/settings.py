"""The pruning layer's settings: the ``pruner`` and ``search`` config groups and what a levels database is
built with. Plain Python (no torch), so the config layer registers and validates them without loading the
solvers; ``ziplm.pruning.levels_database`` and ``ziplm.pruning.targets`` re-export them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ziplm.core.levels import level_grids

# How calibration statistics are collected (`ziplm.pruning.database_builder.build_database`): in one
# whole-model pass over every layer still to build, or block by block (`ziplm.pruning.layerwise`).
CALIBRATION_MODES = ("whole", "layerwise")
# Methods whose statistics come from whole-model passes only (Fisher: gradients of the task loss).
# Mirrors the "fisher" selections of ziplm.pruning.methods (tests/test_layerwise_calibration.py checks).
WHOLE_MODEL_METHODS = ("fisher", "fisher-norescale")
# Block Influence (blockdrop) compares each block's input with its output in whole-model passes too.
_WHOLE_PASS_REASONS = {
    **dict.fromkeys(WHOLE_MODEL_METHODS, "Fisher importances are gradients through the whole model"),
    "blockdrop": "Block Influence is measured in whole-model passes",
}


@dataclass
class PrunerSettings:
    """The ``pruner`` config group (``conf/pruner/*.yaml``): how structures are selected and scored."""

    # Which rule picks the removed structures: obs (ZipLM) | magnitude | random | fisher | fisher-norescale
    # (Kwon et al. 2022, with / without least-squares mask tuning) | layerdrop (whole layers, DistilBERT-style)
    # | blockdrop (whole layers of lowest Block Influence dropped, ShortGPT-style)
    method: str = "obs"
    damp: float = 0.01  # relative Hessian dampening
    calibration_samples: int = 1024  # training samples whose activations build the Hessians
    ffn_group_size: int = 1  # FFN neurons pruned together
    ffn_grid_ratio: float = 0.9  # geometric ratio of the FFN level grid
    ffn_round_to: int = 1  # FFN levels rounded to multiples of this (1 = no rounding)
    # whole: one pass over the model, every layer's Hessians at once | layerwise: block by block, memory flat
    # in depth (large decoders); both build the same database
    calibration: str = "whole"


@dataclass(frozen=True)
class DatabaseSettings:
    """Knobs of a database build (all recorded in its fingerprint but `calibration`, which only changes
    how the same statistics are collected: a database built either way is reused by the other)."""

    damp: float = 0.01
    ffn_group_size: int = 1
    ffn_grid_ratio: float = 0.9
    ffn_round_to: int = 1
    method: str = "obs"  # a name in ziplm.pruning.methods.REGISTRY: obs = ZipLM, the others are baselines
    seed: int = 0  # the run's seed: draws the random baseline's structures (no effect on unseeded methods)
    calibration: str = "whole"  # one of CALIBRATION_MODES

    def __post_init__(self) -> None:
        check_calibration_mode(self.calibration)

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
            calibration=str(pruner.calibration),
        )

    def level_grids(self, num_heads: int, d_ff: int) -> tuple[list[int], list[int]]:
        """(head, FFN) level grids: what the database stores and the latency table times."""
        return level_grids(num_heads, d_ff, self.ffn_grid_ratio, self.ffn_round_to, self.ffn_group_size)


def check_calibration_mode(calibration: str, method: str | None = None) -> None:
    """A calibration mode the builder knows, and one `method` supports (ValueError otherwise)."""
    if calibration not in CALIBRATION_MODES:
        raise ValueError(f"unknown calibration mode {calibration!r}; choose one of {', '.join(CALIBRATION_MODES)}")
    if calibration == "layerwise" and method in WHOLE_MODEL_METHODS:
        raise ValueError(
            f"calibration='layerwise' is not supported by the {method!r} method (Fisher importances are "
            "gradients of the task loss through the whole model); use calibration='whole'"
        )


def check_calibration(pruner: Mapping[str, Any], trainer: Mapping[str, Any]) -> None:
    """``pruner.calibration`` in a composed config, in `ziplm.config.validate`'s one-line format.

    Layer-wise calibration runs in one process (the blocks are replayed here, not in Lightning's calibration
    phase), so a trainer that may start several processes is refused rather than left idle.
    """
    value = pruner.get("calibration", "whole")
    fix = f"; e.g. pruner.calibration={CALIBRATION_MODES[0]}"
    if value not in CALIBRATION_MODES:
        raise ValueError(f"pruner.calibration must be one of {', '.join(CALIBRATION_MODES)}, got {value!r}{fix}")
    if value != "layerwise":
        return
    if pruner.get("method") in _WHOLE_PASS_REASONS:
        raise ValueError(
            f"pruner.calibration must be whole with pruner.method={pruner['method']} "
            f"({_WHOLE_PASS_REASONS[pruner['method']]}), got 'layerwise'{fix}"
        )
    processes = _processes(trainer)
    if processes != 1:
        started = "may start several processes" if processes is None else f"starts {processes} processes"
        raise ValueError(
            f"pruner.calibration must be whole with a multi-process trainer (strategy={trainer.get('strategy')}, "
            f"devices={trainer.get('devices')}, num_nodes={trainer.get('num_nodes')} {started}; layer-wise "
            f"calibration runs in one process), got 'layerwise'{fix} (or trainer.devices=1)"
        )


def _processes(trainer: Mapping[str, Any]) -> int | None:
    """Processes the trainer settings start (as ziplm.lit.distributed.planned_processes × nodes, without
    torch); None when only the machine can tell (DDP on every visible GPU)."""
    nodes = trainer.get("num_nodes") or 1
    if not str(trainer.get("strategy") or "auto").startswith("ddp"):
        return int(nodes)
    devices = trainer.get("devices", "auto")
    if isinstance(devices, list | tuple):
        return len(devices) * int(nodes)
    if (isinstance(devices, int) and not isinstance(devices, bool)) or str(devices).isdigit():
        return max(1, int(devices)) * int(nodes)
    return int(nodes) if trainer.get("accelerator") == "cpu" else None


@dataclass
class SearchSettings:
    """The ``search`` config group (``conf/search/*.yaml``): which speedups to reach and how hard to look."""

    targets: list[float] = field(default_factory=lambda: [1.5, 2.0, 3.0])  # speedups over the dense model
    spdy_random_starts: int = 10
    spdy_local_steps: int = 10
    spdy_loss_samples: int = 64  # labelled training samples scoring each SPDY candidate (task loss)
    speedup_rounds: int = 15  # at most this many interleaved dense/pruned rounds per measured speedup ...
    speedup_ci: float = 0.01  # ... fewer once its ~95% interval is within 1% (`ziplm.latency.speedup`)
    # Closed loop on the measured speedup: a member measured more than `speedup_tolerance` off its target
    # is searched again at a corrected target, up to `speedup_corrections` times (0 = trust the table).
    speedup_tolerance: float = 0.03
    speedup_corrections: int = 2
    # Refit the cached latency table with this run's measured members, for later runs (off: a rerun of the
    # same command on the same cache then gives the same family).
    learn_table: bool = False
