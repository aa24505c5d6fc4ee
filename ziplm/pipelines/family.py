"""Making family members: search a target from a database, stitch, (distill), evaluate, measure, save.

The layer-dropping baseline makes its members here too (`layerdrop_member`), without a database.

Every member is saved (model + structure + metrics.json) before the next begins; a member folder with
a metrics.json is complete, so a restarted run skips it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from ziplm.core.database import LevelDatabase
from ziplm.core.latency import LatencyModel, LatencyTable
from ziplm.core.structure import Structure
from ziplm.eval.evaluate import task_loss
from ziplm.latency.measure import interleaved_speedups
from ziplm.lit.data import TaskDataModule
from ziplm.lit.distributed import barrier, is_main, on_main
from ziplm.lit.module import ZipLMModule
from ziplm.lit.phases import evaluate
from ziplm.lit.trainer import make_trainer
from ziplm.models import adapter_for, count_parameters, load_pruned, save_pruned
from ziplm.pipelines.context import RunContext
from ziplm.pruning.layerdrop import choose_layer_count, distillation_pairs, drop_to_identity, spread_layers
from ziplm.pruning.stitch import stitch
from ziplm.pruning.targets import Choice, SearchSpace, meet_measured_target, search_target
from ziplm.report.records import MemberRecord

METRICS_FILE = "metrics.json"
console = Console()


def member_dir(ctx: RunContext, target: float) -> Path:
    return ctx.out / "family" / f"{target:g}x"


def completed_member(ctx: RunContext, target: float) -> MemberRecord | None:
    """The saved record of a finished member, or None if it still has to be made."""
    path = member_dir(ctx, target) / METRICS_FILE
    return MemberRecord.load(path) if path.is_file() else None


def search_space(database: LevelDatabase, table: LatencyTable, num_layers: int) -> SearchSpace:
    errors = [{s: database.errors(layer, s) for s in ("attention", "ffn")} for layer in range(num_layers)]
    return SearchSpace.build(errors, table)


def choose(
    ctx: RunContext,
    model: torch.nn.Module,
    database: LevelDatabase,
    latency: LatencyModel,
    target: float,
    loss_batches: Sequence[Mapping[str, torch.Tensor]],
) -> tuple[Choice, dict[str, Any] | None]:
    """Per-layer sizes for `target`: DP, refined by SPDY on the task loss of stitched candidates."""
    space = search_space(database, latency.table, latency.num_layers)

    def loss(choice: Choice) -> float:
        return task_loss(stitch(model, database, choice), loss_batches, ctx.eval_precision)

    choice, result = search_target(
        space,
        latency,
        target,
        loss_fn=loss if loss_batches else None,
        random_starts=int(ctx.search.spdy_random_starts),
        local_steps=int(ctx.search.spdy_local_steps),
        seed=int(ctx.cfg.seed),
    )
    return choice, (result.to_dict() if result is not None else None)


def choose_measured(
    ctx: RunContext,
    model: torch.nn.Module,
    dense: torch.nn.Module,
    database: LevelDatabase,
    latency: LatencyModel,
    target: float,
    loss_batches: Sequence[Mapping[str, torch.Tensor]],
) -> tuple[Choice, dict[str, Any]]:
    """`choose`, closed on the measured speedup: each candidate is stitched and timed against `dense`;
    one that misses the target by more than ``search.speedup_tolerance`` is searched again at a
    corrected target (``search.speedup_corrections`` times at most). Returns the closest candidate and
    the record fields that say how it was found (the member's own speedup is measured again, afresh)."""
    rounds = int(ctx.search.speedup_rounds)

    def search_at(search_target: float) -> tuple[tuple[Choice, dict[str, Any] | None], float]:
        choice, search = choose(ctx, model, database, latency, search_target, loss_batches)
        return (choice, search), latency.speedup(choice)

    def measure(candidate: tuple[Choice, dict[str, Any] | None]) -> float:
        return interleaved_speedups(dense, [stitch(model, database, candidate[0])], ctx.env, rounds)[0]

    (choice, search), picked, attempts = meet_measured_target(
        target,
        search_at,
        measure,
        tolerance=float(ctx.search.speedup_tolerance),
        max_corrections=int(ctx.search.speedup_corrections),
        max_speedup=latency.max_speedup,
    )
    if len(attempts) > 1:
        tried = ", ".join(f"{a.search_target:.2f}× → measured {a.measured:.2f}×" for a in attempts)
        console.print(f"member {target:g}x: search target corrected from measurement: {tried}")
    found = {"search": search, "search_target": picked.search_target, "attempts": [a.to_dict() for a in attempts]}
    return choice, found


def distill(
    ctx: RunContext,
    student: Any,
    teacher: Any,
    logger: Any,
    stage: str,
    layer_pairs: Sequence[tuple[int, int]] | None = None,
) -> None:
    """Distill-finetune a pruned student for the schedule's epochs (fresh optimizer and LR schedule).

    `layer_pairs` restricts token distillation to (student layer, teacher layer) pairs (layer dropping).
    """
    epochs = float(ctx.distill.epochs_per_stage)
    if epochs <= 0:
        return
    rate = float(ctx.distill.learning_rate)
    module = ZipLMModule(
        student,
        teacher,
        ctx.distill_weights,
        learning_rate=rate,
        layer_pairs=layer_pairs,
        regression=ctx.task.kind == "regression",
    )
    data = TaskDataModule(ctx.train_features, None, int(ctx.trainer["batch_size"]), int(ctx.trainer["eval_batch_size"]))
    make_trainer(ctx.trainer, ctx.out / "stages" / stage, logger=logger, max_epochs=epochs).fit(module, datamodule=data)
    student.to(ctx.device).eval()  # Lightning's teardown leaves the trained module on the CPU


def finish_member(
    ctx: RunContext,
    pruned: Any,
    dense: Any,
    target: float,
    predicted: float,
    extra: Mapping[str, Any],
) -> MemberRecord:
    """Evaluate, measure against the dense model, and save a member with its record.

    `extra`: the record fields of how the member was made (method, search, search_target, attempts,
    layers_kept: `MemberRecord`'s names).
    """
    started = time.perf_counter()
    batch = int(ctx.trainer["eval_batch_size"])
    metrics = evaluate(pruned, ctx.task, ctx.eval_examples, ctx.eval_features, ctx.trainer, batch, ctx.eval_precision)
    measured = on_main(lambda: interleaved_speedups(dense, [pruned], ctx.env, int(ctx.search.speedup_rounds))[0])
    structure = Structure.from_dict(pruned.config.ziplm_structure)
    folder = member_dir(ctx, target)
    if is_main():
        save_pruned(pruned, structure, folder, tokenizer=ctx.tokenizer, dtype=ctx.member_dtype)
    record = MemberRecord(
        member=f"{target:g}x",
        target_speedup=target,
        predicted_speedup=predicted,
        measured_speedup=measured,
        deviation=measured / target - 1,
        parameters=count_parameters(pruned),
        heads_kept=[len(la.heads) for la in structure.layers],
        neurons_kept=[len(la.neurons) for la in structure.layers],
        metrics=dict(metrics),
        eval_precision=ctx.eval_precision,
        saved_dtype=ctx.member_dtype,
        **extra,
    )
    record.evaluate_measure_seconds = time.perf_counter() - started
    if is_main():
        record.save(folder / METRICS_FILE)
    barrier()  # the member is complete on disk before any rank goes on
    return record


def layerdrop_member(ctx: RunContext, teacher: Any, latency: LatencyModel, target: float, logger: Any) -> MemberRecord:
    """Layer-dropping baseline member: keep the evenly spread layers whose count the latency table puts
    closest to `target`, distill them (each kept layer matched to its own teacher layer), evaluate, save."""
    dims = adapter_for(teacher).dims(teacher)
    count, predicted = choose_layer_count(latency, dims, target)
    keep = spread_layers(dims.num_layers, count)
    student = drop_to_identity(teacher, keep)
    distill(ctx, student, teacher, logger, f"{target:g}x", layer_pairs=distillation_pairs(keep, shorter=False))
    return finish_member(ctx, student, teacher, target, predicted, {"method": ctx.method.name, "layers_kept": keep})


def reload_member(ctx: RunContext, target: float) -> Any:
    """A finished stage, back on the run's device in float32 (it trains further in a gradual run)."""
    return load_pruned(member_dir(ctx, target), device=str(ctx.device), dtype="float32")
