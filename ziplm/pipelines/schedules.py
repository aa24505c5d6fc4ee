"""The three ways a family is made, one function each: one-shot, gradual, and the layer-dropping baselines.

One-shot: one database on the dense teacher serves every target; no fine-tuning.
Gradual: for each increasing target, rebuild the database on the current model, prune, distill from
the dense teacher, evaluate, measure, save. Completed members are skipped on restart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from rich.console import Console
from torch import nn

from ziplm.core.latency import LatencyModel
from ziplm.pipelines.members import Family
from ziplm.pipelines.ranks import build_database_on_ranks
from ziplm.pruning.methods import method as registered_method
from ziplm.pruning.stitch import stitch
from ziplm.report.records import MemberRecord

console = Console()
Batches = Sequence[Mapping[str, torch.Tensor]]
PhaseTimer = Callable[[str], AbstractContextManager[None]]
OnMember = Callable[[MemberRecord], None]


def oneshot(family: Family, teacher: nn.Module, latency: LatencyModel, calibration: Batches, loss: Batches,
            phases: PhaseTimer, on_member: OnMember) -> list[MemberRecord]:  # fmt: skip
    """Every target from one database of the dense teacher."""
    targets, settings = [float(t) for t in family.settings.search.targets], family.settings
    database = None
    if any(family.completed(t) is None for t in targets):
        with phases("calibration + OBS database"):
            database = build_database_on_ranks(
                teacher, calibration, family.out / "database", settings.database, settings.trainer
            )
    members = []
    for target in targets:
        record = family.completed(target)
        if record is None:
            assert database is not None
            with phases(f"member {target:g}x"):
                choice, found = family.pick(teacher, teacher, database, latency, target, loss)
                pruned = stitch(teacher, database, choice)
                extra = {"method": settings.pruner.method, **found}
                record = family.finish(pruned, teacher, target, latency.speedup(choice), extra)
        else:
            console.print(f"member {target:g}x already complete: skipped")
        members.append(record)
        on_member(record)
    return members


def gradual(family: Family, teacher: nn.Module, latency: LatencyModel, calibration: Batches, loss: Batches,
            phases: PhaseTimer, on_member: OnMember, logger: Any) -> list[MemberRecord]:  # fmt: skip
    """Prune → distill → prune ...: each stage starts from the previous member."""
    settings, members, current = family.settings, [], teacher
    for target in [float(t) for t in settings.search.targets]:
        record = family.completed(target)
        if record is not None:
            console.print(f"stage {target:g}x already complete: skipped")
            current = family.reload(target)
        else:
            with phases(f"stage {target:g}x"):
                folder = family.out / "stages" / f"{target:g}x" / "database"
                database = build_database_on_ranks(current, calibration, folder, settings.database, settings.trainer)
                choice, found = family.pick(current, teacher, database, latency, target, loss)
                current = stitch(current, database, choice)
                family.distill(current, teacher, logger, f"{target:g}x")
                extra = {"method": settings.pruner.method, **found}
                record = family.finish(current, teacher, target, latency.speedup(choice), extra)
        members.append(record)
        on_member(record)
    return members


def layerdrop(family: Family, teacher: nn.Module, latency: LatencyModel, calibration: Batches, phases: PhaseTimer,
              on_member: OnMember, logger: Any) -> list[MemberRecord]:  # fmt: skip
    """Layer-dropping baselines: one member per target, distilled epochs_per_stage. Evenly spread layers
    (layerdrop) are cut from the teacher every time; layers chosen by Block Influence (blockdrop) are cut,
    in a gradual schedule, from the previous member and scored on it (the model as shortened so far)."""
    method = registered_method(family.settings.pruner.method)
    chained = family.settings.schedule == "gradual" and method.layer_choice == "influence"
    members, current = [], teacher
    for target in [float(t) for t in family.settings.search.targets]:
        record = family.completed(target)
        if record is None:
            with phases(f"{method.name} {target:g}x"):
                record, member = family.layerdrop_member(teacher, latency, target, logger, current, calibration)
        else:
            console.print(f"member {target:g}x already complete: skipped")
            member = family.reload(target) if chained else teacher
        current = member if chained else teacher
        members.append(record)
        on_member(record)
    return members
