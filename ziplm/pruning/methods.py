"""The structure-selection methods: one `Method` per name, all in `REGISTRY`, the one place a method is chosen.

Every consumer (database build, calibration sampling, the pipeline's member loop, report titles) asks the
registry what a method needs instead of comparing its name. Three ways to choose structures exist:

- ``solver``: a per-level solver with the OBS solver's interface runs on every output projection
  (ZipLM's OBS; the magnitude and random baselines, `ziplm.pruning.baselines`);
- ``fisher``: Fisher mask importances from labelled calibration batches (`ziplm.pruning.fisher`);
- ``layers``: whole layers dropped, no levels database at all (`ziplm.pruning.layerdrop`): evenly spread
  ones kept (``layer_choice="spread"``), or those of highest Block Influence on calibration batches
  (``"influence"``, `ziplm.pruning.block_importance`).

This module imports only the solvers, so the database builders can ask it about a method (arrows one way:
``database_builder → fisher → levels_database → methods → baselines``).
``ziplm.config.validate.METHODS`` mirrors `METHODS` (tests/config/test_validate.py keeps them equal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ziplm.pruning.baselines import Solver, magnitude_solver, obs_solver, random_solver

Selection = Literal["solver", "fisher", "layers"]
LayerChoice = Literal["spread", "influence"]


def _unseeded(solver: Solver) -> Callable[[int], Solver]:
    return lambda _seed: solver


@dataclass(frozen=True)
class Method:
    """What a structure-selection method needs and makes.

    Attributes:
        name: the ``pruner.method`` value.
        label: how reports title its runs ("ZipLM", "magnitude baseline", ...).
        selection: how structures are chosen (see the module docstring).
        solver: for ``selection="solver"``: seed -> per-level solver. The database builder passes a seed
            derived from the run's and the sublayer (only seeded methods use it).
        labelled: its calibration batches carry labels (Fisher importances are task-loss gradients).
        seeded: the run's seed is an input of its levels (and so of the database fingerprint).
        mask_tuning: Fisher only: Kwon et al.'s least-squares rescaling of the kept columns.
        layer_choice: for ``selection="layers"``: which layers are kept (see the module docstring).
    """

    name: str
    label: str
    selection: Selection
    solver: Callable[[int], Solver] | None = None
    labelled: bool = False
    seeded: bool = False
    mask_tuning: bool = False
    layer_choice: LayerChoice | None = None

    @property
    def builds_database(self) -> bool:
        """Whether the method selects structures from a levels database (layer dropping does not)."""
        return self.selection != "layers"

    @property
    def calibrated(self) -> bool:
        """Whether the method reads calibration batches (every method but evenly spread layer dropping)."""
        return self.builds_database or self.layer_choice == "influence"

    def make_solver(self, seed: int) -> Solver:
        """The per-level solver for one sublayer (ValueError for a method without one)."""
        if self.solver is None:
            raise ValueError(f"structure-selection method {self.name!r} has no per-level solver")
        return self.solver(seed)


REGISTRY: dict[str, Method] = {
    m.name: m
    for m in (
        Method("obs", "ZipLM", "solver", solver=_unseeded(obs_solver)),
        Method("magnitude", "magnitude baseline", "solver", solver=_unseeded(magnitude_solver)),
        Method("random", "random baseline", "solver", solver=random_solver, seeded=True),
        # Kwon et al. 2022: Fisher mask search with least-squares mask tuning, or with binary masks only.
        Method("fisher", "fisher baseline", "fisher", labelled=True, mask_tuning=True),
        Method("fisher-norescale", "fisher-norescale baseline", "fisher", labelled=True),
        # DistilBERT/DistilGPT2-style students: whole layers dropped, no levels database.
        Method("layerdrop", "layerdrop baseline", "layers", layer_choice="spread"),
        # ShortGPT-style depth pruning (Men et al. 2024): the layers of highest Block Influence kept.
        Method("blockdrop", "blockdrop baseline", "layers", layer_choice="influence"),
    )
}
METHODS: tuple[str, ...] = tuple(REGISTRY)


def method(name: str) -> Method:
    """The registered method called `name`; one ValueError listing every registered name otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown structure-selection method {name!r} (pruner.method); choose one of {', '.join(METHODS)}"
        ) from None
