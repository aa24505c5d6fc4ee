"""``ziplm run`` / ``ziplm prune``: the recipe, top to bottom.

settings → data → latency table → dense teacher → family (one-shot, gradual or layer dropping) → report.
Completed stages are skipped on restart (rerun with ``hydra.run.dir=<the interrupted run's folder>``).
With a multi-process trainer (``trainer=ddp-cpu``, ``trainer=ddp``) every rank runs this recipe: see
``ziplm.pipelines.ranks`` for what runs where.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from lightning.fabric.utilities.seed import seed_everything
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markdown import Markdown
from torch import nn

from ziplm.commands import INVOCATION
from ziplm.config.settings import RunSettings
from ziplm.config.validate import validate_config
from ziplm.core.latency import LatencyModel, LatencyTable, format_speedup
from ziplm.data.builtin import train_texts
from ziplm.data.calibration import calibration_batches
from ziplm.data.task_data import TaskData
from ziplm.eval.metrics import METRICS
from ziplm.latency.cache import load_or_measure
from ziplm.latency.measure import learn
from ziplm.lit.distributed import barrier, finish_ranks, is_main
from ziplm.models import adapter_for, build_model, build_tokenizer, count_parameters
from ziplm.models.io import count_encoder_parameters
from ziplm.pipelines import schedules
from ziplm.pipelines.baselines import check_baselines, measure_baselines
from ziplm.pipelines.common import head_for
from ziplm.pipelines.embedding import dense_pooling
from ziplm.pipelines.latency import print_self_check
from ziplm.pipelines.members import Family
from ziplm.pipelines.outputs import run_dir
from ziplm.pipelines.phases import Phases
from ziplm.pipelines.placement import TeacherGuard, run_device
from ziplm.pipelines.ranks import start_ranks
from ziplm.pipelines.report import tracker_labels
from ziplm.pipelines.teacher import check_teacher_head, head_kwargs, load_or_train_teacher, teacher_dir
from ziplm.pruning.methods import method as registered_method
from ziplm.report.provenance import provenance_line, write_provenance
from ziplm.report.records import MemberRecord
from ziplm.report.results import correction_notes, timing_note, write_report
from ziplm.report.tracking import Tracker

console = Console()
_NO_LOGGER = {"_target_": None, "kind": "none"}  # ranks other than 0 log nothing (rank 0 logs the run)


def run_prune(cfg: DictConfig) -> None:
    """The ZipLM pipeline for the configured model × task × hardware × pruner × search × schedule."""
    validate_config(cfg)  # the CLI ran it already; a run started from Python gets the same checks
    settings, out = RunSettings.from_config(cfg), run_dir(cfg)
    start_ranks(settings.trainer, out)  # a DDP trainer: its other processes start now, before any work
    seed_everything(settings.seed, workers=True, verbose=False)  # every rank initialises the same heads
    _quiet_libraries()
    phases, started = Phases(), time.perf_counter()
    with phases("validate config and load data"):
        method, device = registered_method(settings.pruner.method), run_device(settings.trainer)
        settings.hardware.validate()
        check_teacher_head(settings.model, settings.task)
        check_baselines(settings.baselines, settings.task)  # head, labels, architecture, reachable: no weights read
        tokenizer = build_tokenizer(settings.model, cache_dir=settings.cache_dir, corpus=train_texts)
        data = TaskData.load(settings.task, tokenizer, settings.seed)
        embedding = settings.task.kind == "embedding"
        pooling = dense_pooling(settings.model) if embedding else None  # label-free: the model's own pooling
    console.print(f"run folder: {out}")
    made_by = write_provenance(out, INVOCATION or ["run", "(from Python)"]) if is_main() else None
    latency, table_path = _latency_model(settings, out, phases)
    tracker = Tracker(settings.logger if is_main() else _NO_LOGGER, out, tracker_labels(cfg))
    tracker.log_run(OmegaConf.to_container(cfg, resolve=True), made_by)  # type: ignore[arg-type]
    family = Family(settings, data, out, device, pooling=pooling)
    with phases("dense teacher"):
        teacher, cached = load_or_train_teacher(settings, data, out, device, tracker.lightning_logger)
        if embedding:
            console.print("the dense model is the teacher (task kind embedding: no fine-tuning, no labels)")
        else:
            console.print("reused cached teacher" if cached else "fine-tuned and cached the teacher")
        reference = {"model": settings.model.name, "source": settings.model.source}
        family.use_dense(teacher, reference | {"teacher": str(teacher_dir(settings).resolve())})
        guard = TeacherGuard(teacher)  # from here on, every phase must leave the teacher as it is now
        dense = _dense_record(family, teacher)
    guard.check("dense teacher")
    phases.after.append(guard.check)
    tracker.log_member(dense.to_json(), step=0)
    baselines = []
    if settings.baselines:
        with phases("baselines"):
            baselines = measure_baselines(family, teacher, settings.baselines)
    steps = iter(range(1, len(settings.search.targets) + 1))
    on_member = lambda record: tracker.log_member(record.to_json(), step=next(steps))  # noqa: E731
    # Calibration (Fisher methods take gradients of the task loss: labelled; blockdrop scores blocks on it).
    drawn, seed = settings.pruner.calibration_samples if method.calibrated else 0, settings.seed
    calibration = calibration_batches(data.train_features, drawn, 32, seed, method.labelled) if drawn else []
    if not method.builds_database:  # layer dropping
        logger = tracker.lightning_logger
        members = schedules.layerdrop(family, teacher, latency, calibration, phases, on_member, logger)
    else:
        samples = settings.search.spdy_loss_samples
        loss = calibration_batches(data.train_features, samples, 32, settings.seed + 1, True) if samples > 0 else []
        if settings.schedule == "oneshot":
            members = schedules.oneshot(family, teacher, latency, calibration, loss, phases, on_member)
        else:
            logger = tracker.lightning_logger
            members = schedules.gradual(family, teacher, latency, calibration, loss, phases, on_member, logger)
    if is_main():
        _report(family, dense, members, baselines, phases, started, tracker, str(cfg.hardware.name), made_by)
        if settings.search.learn_table:
            _teach_table(table_path, members)
    finish_ranks()


def _teach_table(path: Path | None, members: list[MemberRecord]) -> None:
    """Refit the cached latency table with this run's measured members, for the runs after this one (this
    run's family was searched on the table as loaded, so it stays reproducible from its own copy)."""
    timed = [
        (list(zip(m.heads_kept, m.neurons_kept, strict=True)), m.measured_speedup)
        for m in members
        if m.heads_kept and m.neurons_kept and m.measured_speedup
    ]
    if not timed or path is None:
        return
    table = LatencyTable.load(path)
    learned = learn(table, timed)
    if learned is not table:
        learned.save(path)
        console.print(f"latency table {path} refitted with {len(timed)} measured members for later runs")


def _quiet_libraries() -> None:
    """Our phases and progress bars say what happens; keep library chatter to warnings."""
    import datasets

    datasets.disable_progress_bars()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _latency_model(settings: RunSettings, out: Path, phases: Phases) -> tuple[LatencyModel, Path | None]:
    """Measure (or reuse) the table on an untrained model of the same shape; check targets against it.
    Returns the model and (rank 0) where the table is cached."""
    path: Path | None = None
    with phases("latency table"):
        task = settings.task
        probe = build_model(settings.model, head_for(task.name, task.kind), **head_kwargs(task)).eval()
        dims = adapter_for(probe).dims(probe)
        heads, ffn = settings.database.level_grids(dims.num_heads, dims.intermediate_size)
        if is_main():  # one process times; the others read its cached table
            table, path, cached = load_or_measure(probe, settings.hardware, heads, ffn, settings.cache_dir)
            shutil.copyfile(path, out / "latency_table.json")
            console.print(f"{'reused' if cached else 'measured'} latency table {path}")
            print_self_check(console, table)
        barrier()
        if not is_main():
            table, _, _ = load_or_measure(probe, settings.hardware, heads, ffn, settings.cache_dir)
    latency = LatencyModel(table, dims.num_layers)
    targets = [float(t) for t in settings.search.targets]
    latency.check_reachable(targets)
    hollow = [t for t in targets if t > latency.max_layer_preserving_speedup]
    if hollow:
        console.print(
            f"[bold yellow]warning:[/bold yellow] targets {hollow} cannot keep a sublayer in every layer: above "
            f"{format_speedup(latency.max_layer_preserving_speedup)} (the largest target that keeps at least one "
            "attention or FFN block per layer) the search removes whole layers' blocks and the members are "
            "mostly embeddings and head; lower search.targets unless that is what you want"
        )
    return latency, path


def _dense_record(family: Family, teacher: nn.Module) -> MemberRecord:
    """The dense row: evaluated once per run folder (again if the evaluation precision changed)."""
    path = family.out / "dense_metrics.json"
    if path.is_file():
        saved = MemberRecord.load(path)
        if saved.eval_precision == family.eval_precision:
            return saved
    record = MemberRecord("dense", count_parameters(teacher), family.scores(teacher), family.eval_precision)
    record.encoder_parameters = count_encoder_parameters(teacher)
    if is_main():
        record.save(path)
    return record


def _report(family: Family, dense: MemberRecord, members: list[MemberRecord], baselines: list[MemberRecord],
            phases: Phases, started: float, tracker: Tracker, hardware_name: str,
            made_by: dict | None) -> None:  # fmt: skip
    settings, env, out = family.settings, family.settings.hardware, family.out
    metric = METRICS[settings.task.metric].headline
    label = registered_method(settings.pruner.method).label  # "ZipLM", "<method> baseline"
    title = f"{label} {settings.schedule}: {settings.model.name} on {settings.task.name}, {hardware_name} environment"
    phase_notes = [f"{name}: {seconds:.1f} s" for name, seconds in phases.seconds.items()]
    notes = [
        f"environment: {env.device} {env.dtype}, batch {env.batch_size} × seq {env.seq_length}",
        f"evaluation: dense model and members alike in precision {family.eval_precision} on {family.device}; "
        f"members saved as {settings.member_dtype}; training precision {settings.trainer['precision']}",
        "measured speedup: end-to-end, dense and member timed interleaved; deviation = measured/target − 1",
        "predicted: the latency table's speedup for the kept structure; when a pick's measured speedup missed "
        "its target by more than the tolerance, the search ran again at a corrected target "
        "(search.speedup_corrections)",
        "blocks (M): parameters of the Transformer blocks only (no embeddings, no task or LM head)",
        *[timing_note(noise, members[0].tolerance if members else None) for noise in family.timing.values()],
        *correction_notes(members),
        *[_influence_note(m) for m in members if m.block_influence],
        *phase_notes,
        f"total: {time.perf_counter() - started:.1f} s",
        provenance_line(made_by),
    ]
    table, plot = write_report(out, dense, members, metric, title, notes, baselines)
    (out / "phases.json").write_text(json.dumps(phases.seconds, indent=2) + "\n")
    teacher = teacher_dir(settings)
    tracker.log_report(dense, members, metric, plot, out / "latency_table.json", baselines, teacher)
    console.print(Markdown(table))
    console.print(f"[green]done[/green] in {time.perf_counter() - started:.0f} s — report: {out / 'results.md'}")


def _influence_note(member: MemberRecord) -> str:
    """Why a blockdrop member keeps its layers: every layer's Block Influence (– for one dropped before)."""
    scores = ", ".join("–" if bi is None else f"{bi:.4f}" for bi in member.block_influence or [])
    return f"{member.member}: kept layers {member.layers_kept} of highest Block Influence (per layer: {scores})"
