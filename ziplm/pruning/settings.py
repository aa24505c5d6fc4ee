"""The pruning layer's settings: the ``pruner`` and ``search`` config groups and what a levels database is
built with. Plain Python (no torch), so the config layer registers and validates them without loading the
solvers; ``ziplm.pruning.levels_database`` and ``ziplm.pruning.targets`` re-export them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ziplm.core.levels import level_grids


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
