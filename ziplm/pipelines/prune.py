"""``ziplm prune`` / ``ziplm run``: teacher -> latency table -> database -> family -> report.

One-shot: one database on the dense teacher serves every target; no fine-tuning.
Gradual: for each increasing absolute target, rebuild the database on the current model, prune,
distill from the dense teacher, evaluate, measure, save. Completed stages are skipped on restart
(rerun with ``hydra.run.dir=<the interrupted run's folder>``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from lightning.fabric.utilities.seed import seed_everything
from omegaconf import DictConfig
from rich.console import Console
from rich.markdown import Markdown

from ziplm.core.latency import LatencyModel, format_speedup
from ziplm.data.calibration import calibration_batches
from ziplm.eval.metrics import METRICS
from ziplm.latency.cache import load_or_measure
from ziplm.lit.distributed import barrier, finish_ranks, is_main, on_main
from ziplm.lit.phases import evaluate
from ziplm.models import adapter_for, build_model, count_parameters
from ziplm.pipelines.common import to_dict
from ziplm.pipelines.context import RunContext, build_context
from ziplm.pipelines.family import (
    choose_measured,
    completed_member,
    distill,
    finish_member,
    layerdrop_member,
    reload_member,
)
from ziplm.pipelines.latency import level_grids, print_self_check
from ziplm.pipelines.outputs import run_dir
from ziplm.pipelines.placement import TeacherGuard
from ziplm.pipelines.ranks import build_database_on_ranks, start_ranks
from ziplm.pipelines.report import tracker_labels
from ziplm.pipelines.teacher import check_teacher_head, head_kwargs, load_or_train_teacher
from ziplm.pruning.methods import method as registered_method
from ziplm.pruning.stitch import stitch
from ziplm.report.records import MemberRecord
from ziplm.report.results import correction_notes, results_rows, write_report
from ziplm.report.tracking import Tracker

console = Console()
_NO_LOGGER = {"_target_": None, "kind": "none"}  # ranks other than 0 log nothing (rank 0 logs the run)


class Phases:
    """Wall time per phase, printed and kept in the report; `after` callbacks run when a phase ends
    (the teacher guard checks the dense model after every phase)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.after: list[Callable[[str], None]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        console.rule(f"[bold]{name}")
        started = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        console.print(f"[dim]{name}: {self.seconds[name]:.1f} s[/dim]")
        for callback in self.after:
            callback(name)


def _latency(ctx: RunContext, phases: Phases) -> LatencyModel:
    """Measure (or reuse) the table on an untrained model of the same shape; check targets against it."""
    with phases("latency table"):
        probe = build_model(ctx.spec, _head(ctx), **head_kwargs(ctx)).eval()
        dims = adapter_for(probe).dims(probe)
        heads, ffn = level_grids(ctx.cfg, dims.num_heads, dims.intermediate_size)
        if is_main():  # one process times; the others read its cached table
            table, path, cached = load_or_measure(probe, ctx.env, heads, ffn, ctx.cfg.cache_dir)
            shutil.copyfile(path, ctx.out / "latency_table.json")
            console.print(f"{'reused' if cached else 'measured'} latency table {path}")
            print_self_check(console, table)
        barrier()
        if not is_main():
            table, _, _ = load_or_measure(probe, ctx.env, heads, ffn, ctx.cfg.cache_dir)
    latency = LatencyModel(table, dims.num_layers)
    latency.check_reachable(ctx.targets)
    hollow = [t for t in ctx.targets if t > latency.max_layer_preserving_speedup]
    if hollow:
        console.print(
            f"[bold yellow]warning:[/bold yellow] targets {hollow} cannot keep a sublayer in every layer: above "
            f"{format_speedup(latency.max_layer_preserving_speedup)} (the largest target that keeps at least one "
            "attention or FFN block per layer) the search removes whole layers' blocks and the members are "
            "mostly embeddings and head; lower search.targets unless that is what you want"
        )
    return latency


def _head(ctx: RunContext) -> Any:
    from ziplm.pipelines.common import task_head

    return task_head(ctx.cfg)


def _dense_record(ctx: RunContext, teacher: Any) -> MemberRecord:
    path = ctx.out / "dense_metrics.json"
    if path.is_file():
        saved = MemberRecord.load(path)
        if saved.eval_precision == ctx.eval_precision:
            return saved
    batch = int(ctx.trainer["eval_batch_size"])
    metrics = evaluate(teacher, ctx.task, ctx.eval_examples, ctx.eval_features, ctx.trainer, batch, ctx.eval_precision)
    record = MemberRecord("dense", count_parameters(teacher), dict(metrics), ctx.eval_precision)
    if is_main():
        record.save(path)
    return record


def _oneshot(ctx: RunContext, teacher: Any, latency: LatencyModel, batches: dict[str, list[Any]], phases: Phases,
             on_member: Callable[[MemberRecord], None]) -> list[MemberRecord]:  # fmt: skip
    members = []
    todo = [t for t in ctx.targets if completed_member(ctx, t) is None]
    if todo:
        with phases("calibration + OBS database"):
            db = build_database_on_ranks(
                teacher, batches["calibration"], ctx.out / "database", ctx.database_settings, ctx.trainer
            )
    for target in ctx.targets:
        record = completed_member(ctx, target)
        if record is None:
            with phases(f"member {target:g}x"):
                choice, found = on_main(
                    lambda: choose_measured(ctx, teacher, teacher, db, latency, target, batches["loss"])  # noqa: B023
                )
                pruned = stitch(teacher, db, choice)
                extra = {"method": ctx.method.name, **found}
                record = finish_member(ctx, pruned, teacher, target, latency.speedup(choice), extra)
        else:
            console.print(f"member {target:g}x already complete: skipped")
        members.append(record)
        on_member(record)
    return members


def _gradual(ctx: RunContext, teacher: Any, latency: LatencyModel, batches: dict[str, list[Any]], phases: Phases,
             on_member: Callable[[MemberRecord], None], logger: Any) -> list[MemberRecord]:  # fmt: skip
    members, current = [], teacher
    for target in ctx.targets:
        record = completed_member(ctx, target)
        if record is not None:
            console.print(f"stage {target:g}x already complete: skipped")
            current = reload_member(ctx, target)
        else:
            with phases(f"stage {target:g}x"):
                db = build_database_on_ranks(
                    current,
                    batches["calibration"],
                    ctx.out / "stages" / f"{target:g}x" / "database",
                    ctx.database_settings,
                    ctx.trainer,
                )
                choice, found = on_main(
                    lambda: choose_measured(ctx, current, teacher, db, latency, target, batches["loss"])  # noqa: B023
                )
                current = stitch(current, db, choice)
                distill(ctx, current, teacher, logger, f"{target:g}x")
                extra = {"method": ctx.method.name, **found}
                record = finish_member(ctx, current, teacher, target, latency.speedup(choice), extra)
        members.append(record)
        on_member(record)
    return members


def _layerdrop(ctx: RunContext, teacher: Any, latency: LatencyModel, phases: Phases,
               on_member: Callable[[MemberRecord], None], logger: Any) -> list[MemberRecord]:  # fmt: skip
    """Layer-dropping baseline: every member starts from the teacher and is distilled epochs_per_stage."""
    members = []
    for target in ctx.targets:
        record = completed_member(ctx, target)
        if record is None:
            with phases(f"layerdrop {target:g}x"):
                record = layerdrop_member(ctx, teacher, latency, target, logger)
        else:
            console.print(f"member {target:g}x already complete: skipped")
        members.append(record)
        on_member(record)
    return members


def check_method(method: str) -> None:
    """Fail before any expensive work on a misspelt structure-selection method (the registry's error)."""
    registered_method(method)


def _quiet_libraries() -> None:
    """Our phases and progress bars say what happens; keep library chatter to warnings."""
    import datasets

    datasets.disable_progress_bars()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_prune(cfg: DictConfig) -> None:
    """The ZipLM pipeline for the configured model × task × hardware × schedule."""
    _quiet_libraries()
    phases, started = Phases(), time.perf_counter()
    start_ranks(to_dict(cfg.trainer), run_dir(cfg))  # a DDP trainer: its other processes start now
    seed_everything(int(cfg.seed), workers=True, verbose=False)  # every rank initialises the same heads
    with phases("validate config and load data"):
        ctx = build_context(cfg)
        check_method(ctx.database_settings.method)
        check_teacher_head(ctx)
    console.print(f"run folder: {ctx.out}")
    latency = _latency(ctx, phases)
    tracker = Tracker(ctx.logger if is_main() else _NO_LOGGER, ctx.out, tracker_labels(cfg))  # W&B: model, task, sweep
    with phases("dense teacher"):
        teacher, cached = load_or_train_teacher(ctx, tracker.lightning_logger)
        console.print("reused cached teacher" if cached else "fine-tuned and cached the teacher")
        guard = TeacherGuard(teacher)  # from here on, every phase must leave the teacher as it is now
        dense = _dense_record(ctx, teacher)
    guard.check("dense teacher")
    phases.after.append(guard.check)
    tracker.log_member(dense.to_json(), step=0)
    seed, method = int(cfg.seed), ctx.method
    labelled = method.labelled  # e.g. Fisher importances are gradients of the task loss
    batches = {
        "calibration": calibration_batches(
            ctx.train_features, int(ctx.pruner.calibration_samples), 32, seed, labelled
        ),
        "loss": calibration_batches(ctx.train_features, int(ctx.search.spdy_loss_samples), 32, seed + 1, True)
        if int(ctx.search.spdy_loss_samples) > 0
        else [],
    }
    steps = iter(range(1, len(ctx.targets) + 1))
    on_member = lambda record: tracker.log_member(record.to_json(), step=next(steps))  # noqa: E731
    if not method.builds_database:  # layer dropping
        members = _layerdrop(ctx, teacher, latency, phases, on_member, tracker.lightning_logger)
    elif ctx.schedule == "oneshot":
        members = _oneshot(ctx, teacher, latency, batches, phases, on_member)
    else:
        members = _gradual(ctx, teacher, latency, batches, phases, on_member, tracker.lightning_logger)
    if is_main():
        _report(ctx, dense, members, phases, started, tracker)
    finish_ranks()


def _report(ctx: RunContext, dense: MemberRecord, members: list[MemberRecord], phases: Phases, started: float,
            tracker: Tracker) -> None:  # fmt: skip
    metric = METRICS[ctx.task.metric].headline
    label = ctx.method.label  # "ZipLM", "<method> baseline"
    title = f"{label} {ctx.schedule}: {ctx.spec.name} on {ctx.task.name}, {ctx.cfg.hardware.name} environment"
    phase_notes = [f"{name}: {seconds:.1f} s" for name, seconds in phases.seconds.items()]
    notes = [
        f"environment: {ctx.env.device} {ctx.env.dtype}, batch {ctx.env.batch_size} × seq {ctx.env.seq_length}",
        f"evaluation: dense model and members alike in precision {ctx.eval_precision} on {ctx.device}; "
        f"members saved as {ctx.member_dtype}; training precision {ctx.trainer['precision']}",
        "measured speedup: end-to-end, dense and member timed interleaved; deviation = measured/target − 1",
        "predicted: the latency table's speedup for the kept structure; when a pick's measured speedup missed "
        f"its target by more than {100 * float(ctx.search.speedup_tolerance):g}%, the search ran again at a "
        "corrected target (search.speedup_corrections)",
        *correction_notes(members),
        *phase_notes,
        f"total: {time.perf_counter() - started:.1f} s",
    ]
    table, plot = write_report(ctx.out, dense, members, metric, title, notes)
    (ctx.out / "phases.json").write_text(json.dumps(phases.seconds, indent=2) + "\n")
    tracker.log_report(*results_rows(dense, members, metric), plot, ctx.out / "latency_table.json")
    console.print(Markdown(table))
    console.print(f"[green]done[/green] in {time.perf_counter() - started:.0f} s — report: {ctx.out / 'results.md'}")
