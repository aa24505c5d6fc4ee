"""What a multi-process run does on which rank (see ``ziplm.lit.distributed``).

Every rank runs the recipe. Lightning phases (teacher fit, evaluation, calibration, distillation) run
on all of them; the latency table, the OBS solves, the search, the timings and every file are made by
rank 0 and handed to the others (objects by broadcast, the database through its folder).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from torch import nn

from ziplm.commands import INVOCATION
from ziplm.core.database import LevelDatabase
from ziplm.lit.distributed import barrier, broadcast, is_main, launch_ranks, planned_processes, world_size
from ziplm.lit.phases import calibrate as lightning_calibrate
from ziplm.pruning.capture import Calibrate, projections
from ziplm.pruning.database_builder import build_database
from ziplm.pruning.levels_database import DatabaseSettings


def start_ranks(trainer: Mapping[str, Any], out: Path) -> None:
    """Start the run's other processes (a DDP trainer) before any work; nothing for a 1-process trainer."""
    count = planned_processes(trainer) * int(trainer.get("num_nodes") or 1)
    if count == 1:
        return
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ValueError(
            f"a {count}-process trainer inside a local -m sweep is not supported: run the jobs one at a time, "
            "or sweep with the submitit (SLURM) launcher, which starts each job's processes itself"
        )
    if not INVOCATION:
        raise ValueError("a multi-process trainer needs the `ziplm` command line (start the run with `ziplm run ...`)")
    user_args = [a for a in INVOCATION if not a.split("=", 1)[0].lstrip("+").startswith("hydra.run.dir")]
    child = [
        "-m",
        "ziplm",
        *user_args,
        f"hydra.run.dir={out}",
        "hydra.output_subdir=null",
        "hydra/job_logging=disabled",
    ]
    launch_ranks(trainer, child, out)


def calibrator(trainer: Mapping[str, Any], show_progress: bool = True) -> Calibrate:
    """Calibration passes as a Lightning phase on the run's devices (Hessians summed over ranks)."""

    def run(model: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]], modules: Mapping[str, nn.Module]) -> Any:
        return lightning_calibrate(model, batches, modules, trainer, show_progress=show_progress and is_main())

    return run


def build_database_on_ranks(
    model: nn.Module,
    batches: Sequence[Mapping[str, torch.Tensor]],
    folder: Path,
    settings: DatabaseSettings,
    trainer: Mapping[str, Any],
) -> LevelDatabase:
    """The levels database: every rank calibrates, rank 0 solves and writes, the others read its folder.

    Rank 0 tells the others which projections each calibration pass covers (the builder decides: only
    the layers a resumed database still lacks); they join that pass, then wait for the end of the build.
    """
    if settings.calibration == "layerwise" and world_size() > 1:  # validate_config refuses it before any work
        raise ValueError("pruner.calibration=layerwise runs in one process; use pruner.calibration=whole with DDP")
    calibrate = calibrator(trainer)
    build = functools.partial(build_database, model, batches, folder, settings)
    if world_size() == 1:
        return build(calibrate=calibrate)
    if is_main():

        def leader(m: nn.Module, b: Sequence[Mapping[str, torch.Tensor]], modules: Mapping[str, nn.Module]) -> Any:
            broadcast(sorted(modules))
            return calibrate(m, b, modules)

        try:
            database = build(calibrate=leader)
        finally:
            broadcast(None)  # the build is over (or failed): release the others
        barrier()
        return database
    names: list[str] | None
    while (names := broadcast(None)) is not None:
        every = {f"{k[0]}.{k[1]}": module for k, module in projections(model, range(_num_layers(model))).items()}
        calibrate(model, batches, {name: every[name] for name in names})
    barrier()
    return build(calibrate=calibrate, show_progress=False)  # complete on disk: opened, nothing computed


def _num_layers(model: nn.Module) -> int:
    from ziplm.models import adapter_for

    return adapter_for(model).dims(model).num_layers
