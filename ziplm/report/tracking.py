"""Experiment tracking: the same metrics, table, plot and latency table go to W&B (offline by default)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ziplm.report.records import MemberRecord

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger


@dataclass(frozen=True)
class RunLabels:
    """What a W&B run is: its name, group and tags say model/task/hardware/schedule/method/targets.

    Runs are grouped by experiment (``logger.group`` wins when set); the jobs of one sweep share the
    group ``<experiment>/<sweep id>`` with the sweep's report run, so one W&B group is one sweep.
    """

    experiment: str
    model: str
    task: str
    hardware: str
    schedule: str
    method: str
    targets: tuple[float, ...]
    sweep: str | None = None  # the sweep folder's name (its timestamp) for multirun jobs
    job: int | None = None

    @property
    def name(self) -> str:
        targets = ",".join(f"{t:g}x" for t in self.targets)
        job = f" #{self.job}" if self.job is not None else ""
        return f"{self.model}/{self.task}/{self.hardware}/{self.schedule}-{self.method}/{targets}{job}"

    def group(self, configured: str | None = None) -> str:
        if configured:
            return configured
        return f"{self.experiment}/{self.sweep}" if self.sweep else self.experiment

    def tags(self, configured: Sequence[str] = ()) -> list[str]:
        tags = [f"{k}:{v}" for k, v in self._fields().items()]
        return [*tags, *(["sweep"] if self.sweep else []), *configured]

    def _fields(self) -> dict[str, str]:
        return {
            "experiment": self.experiment,
            "model": self.model,
            "task": self.task,
            "hardware": self.hardware,
            "schedule": self.schedule,
            "method": self.method,
        }


# The `logger` group's choices; a config without `_target_` (older runs, plain dicts) names one by `kind`.
LOGGER_TARGETS: dict[str, str | None] = {
    "wandb": "lightning.pytorch.loggers.WandbLogger",
    "csv": "lightning.pytorch.loggers.CSVLogger",
    "none": None,
}
WANDB_TARGETS = ("lightning.pytorch.loggers.WandbLogger", "lightning.pytorch.loggers.wandb.WandbLogger")
ZIPLM_LOGGER_KEYS = ("_target_", "kind")  # ziplm's own: `kind` only names the group's choice
WANDB_KEYS = ("project", "mode", "group", "tags")  # every choice has them (the sweep report's W&B run too)


def logger_target(logger: Mapping[str, Any]) -> str | None:
    """The logger class's import path (None: no logger); a config without `_target_` names it by `kind`."""
    if "_target_" in logger:
        return str(logger["_target_"]) if logger["_target_"] else None
    kind = str(logger.get("kind", "none"))
    if kind not in LOGGER_TARGETS:
        raise ValueError(f"unknown logger kind {kind!r}; choose logger=wandb, csv or none")
    return LOGGER_TARGETS[kind]


def is_wandb(logger: Mapping[str, Any]) -> bool:
    """Whether the configured logger class is (a subclass of) Lightning's WandbLogger.

    The usual paths are known without importing Lightning (``ziplm report`` stays light); others are imported.
    """
    target = logger_target(logger)
    if target is None or target in WANDB_TARGETS:
        return target is not None
    if target in LOGGER_TARGETS.values():
        return False
    from hydra.utils import get_class
    from lightning.pytorch.loggers import WandbLogger

    cls = get_class(target)
    return isinstance(cls, type) and issubclass(cls, WandbLogger)


def _wandb_mode(logger: Mapping[str, Any]) -> str:
    """``WANDB_MODE`` wins over the config's mode (offline unless the user opts in)."""
    return os.environ.get("WANDB_MODE") or str(logger.get("mode") or "offline")


def make_logger(logger: Mapping[str, Any], save_dir: Path, run_name: str) -> Logger | bool:
    """The run's Lightning logger, built with ``hydra.utils.instantiate`` from the ``logger`` group, or False.

    `logger` is a ``_target_`` config (W&B offline unless the user opts in, CSV, none, or any Lightning
    logger class with its kwargs). The run-time arguments fill what the config leaves unset: save_dir (the
    run folder) and name (the run name), where the class takes them; W&B also gets project, group, tags and
    mode (``WANDB_MODE`` wins). Lightning is imported here, only by runs that log; `make_trainer`
    (``ziplm.lit.trainer``) takes the result.
    """
    import inspect

    from hydra.utils import get_class, instantiate

    target = logger_target(logger)
    if target is None:
        return False
    wandb = is_wandb(logger)
    params = inspect.signature(get_class(target)).parameters
    named = {k for k, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    config = {k: v for k, v in logger.items() if k not in ZIPLM_LOGGER_KEYS}
    if not wandb:  # every choice carries the W&B settings; another class gets those its __init__ names
        config = {k: v for k, v in config.items() if k not in WANDB_KEYS or (k in named and v not in (None, []))}
    if "_target_" not in logger and not wandb:
        config.setdefault("name", "csv")  # a config from before `_target_`: the CSV logger wrote <run>/csv/
    config = {k: v for k, v in config.items() if v is not None or k not in ("name", "save_dir", "mode")}
    for key, value in {"save_dir": str(save_dir), "name": run_name, "run_name": run_name}.items():
        if key in named:
            config.setdefault(key, value)
    if wandb:
        config["mode"] = _wandb_mode(logger)
        config.setdefault("project", "ziplm")
        config.setdefault("job_type", "prune")  # the sweep's report run is "sweep-report"
        config["tags"] = list(config.get("tags") or [])
    return instantiate({"_target_": target, **config}, _convert_="all")


class Tracker:
    """Wraps the Lightning logger of the run so pipelines log members and reports in one place.

    `run` is a plain run name or `RunLabels` (which also set the W&B group and tags).
    """

    def __init__(self, logger_cfg: Mapping[str, Any], out: Path, run: str | RunLabels) -> None:
        settings = dict(logger_cfg)
        if isinstance(run, RunLabels) and is_wandb(logger_cfg):
            settings["group"] = run.group(logger_cfg.get("group"))
            settings["tags"] = run.tags(list(logger_cfg.get("tags") or []))
        self.lightning_logger = make_logger(settings, out, run.name if isinstance(run, RunLabels) else run)
        self.labels = run if isinstance(run, RunLabels) else None
        self._axes_defined = False

    def log_run(self, config: Mapping[str, Any], made_by: Mapping[str, Any] | None) -> None:
        """The resolved config and the provenance (commit, versions, command, machine) as the run's
        hyperparameters: W&B's run config (filter and diff runs by any setting), the CSV logger's hparams."""
        logger = self.lightning_logger
        if not logger or isinstance(logger, bool):
            return
        logger.log_hyperparams({**config, "provenance": dict(made_by or {})})

    def log_member(self, record: Mapping[str, Any], step: int) -> None:
        """Numeric fields of a member record (dense is member 0). On W&B the family's charts use their own
        axis, ``family/member_index``, not the training steps the stages' fits log on."""
        logger = self.lightning_logger
        if not logger or isinstance(logger, bool):
            return
        numbers = {f"family/{k}": float(v) for k, v in record.items() if isinstance(v, int | float)}
        wandb_run = _wandb_run(logger)
        if wandb_run is not None:
            if not self._axes_defined:
                wandb_run.define_metric("family/member_index")
                wandb_run.define_metric("family/*", step_metric="family/member_index")
                self._axes_defined = True
            wandb_run.log({**numbers, "family/member_index": step})
            return
        logger.log_metrics(numbers, step=step)

    def log_report(
        self,
        dense: MemberRecord,
        members: Sequence[MemberRecord],
        metric: str,
        plot: Path,
        latency_table: Path,
        baselines: Sequence[MemberRecord] = (),
        teacher: Path | None = None,
    ) -> None:
        """W&B only: the family as a table of numbers (sortable, chartable), a native W&B scatter of the metric
        against the measured speedup, the report's plot, and the latency table as an artifact."""
        run = _wandb_run(self.lightning_logger)
        if run is None:
            return
        import wandb

        columns, rows = numeric_rows(dense, [*members, *baselines], metric)
        table = wandb.Table(columns=columns, data=rows)
        pareto = wandb.plot.scatter(table, "measured_speedup", metric, title=f"{metric} vs measured speedup")
        run.log({"results": table, "pareto": pareto, "metric_vs_speedup": wandb.Image(str(plot))})
        log_lineage(run, self.labels, latency_table, teacher, latency_table.parent, members)
        run.finish()


def log_lineage(run: Any, labels: RunLabels | None, latency_table: Path, teacher: Path | None, out: Path,
                members: Sequence[MemberRecord]) -> None:  # fmt: skip
    """W&B artifacts with their lineage: the run uses the teacher (and the latency table of its model ×
    environment) and produces the levels database and one model artifact per member. Large folders are
    referenced (``file://``), not copied; each artifact's metadata says what it is."""
    import wandb

    model, task, hardware = (labels.model, labels.task, labels.hardware) if labels else ("model", "task", "hardware")
    table = wandb.Artifact(f"latency-{model}-{hardware}", type="latency-table", metadata={"environment": hardware})
    table.add_file(str(latency_table))
    run.log_artifact(table)
    teacher_name = f"teacher-{model}-{task}"
    if teacher is not None and teacher.is_dir():
        dense = wandb.Artifact(teacher_name, type="teacher", metadata={"folder": str(teacher)})
        dense.add_reference(f"file://{teacher.resolve()}")
        # Online the run *uses* the teacher (an input edge in the lineage graph); W&B refuses inputs offline,
        # so an offline run logs it as an output and the members' metadata name it.
        run.log_artifact(dense) if _offline(run) else run.use_artifact(dense)
    database = out / "database"
    if database.is_dir():
        db = wandb.Artifact(f"database-{model}-{task}", type="levels-database")
        db.add_reference(f"file://{database.resolve()}")
        run.log_artifact(db)
    for member in members:
        folder = out / "family" / member.member
        if folder.is_dir():
            metadata = {**member.to_json(), "teacher": teacher_name, "database": f"database-{model}-{task}"}
            artifact = wandb.Artifact(f"member-{model}-{task}-{member.member}", type="model", metadata=metadata)
            artifact.add_reference(f"file://{folder.resolve()}")
            run.log_artifact(artifact)


def _offline(run: Any) -> bool:
    return bool(getattr(getattr(run, "settings", None), "_offline", False) or getattr(run, "offline", False))


def _wandb_run(logger: Any) -> Any:
    """The W&B run behind a Lightning logger, or None for any other logger (or none)."""
    if not logger or isinstance(logger, bool):
        return None
    from lightning.pytorch.loggers import WandbLogger

    return logger.experiment if isinstance(logger, WandbLogger) else None


def numeric_rows(
    dense: MemberRecord, members: Sequence[MemberRecord], metric: str
) -> tuple[list[str], list[list[Any]]]:
    """The results as numbers (dense first): what a W&B table sorts, filters and charts."""
    columns = ["member", "target_speedup", "predicted_speedup", "measured_speedup", "deviation", metric,
               f"{metric}_vs_dense", "parameters", "percent_parameters", "encoder_parameters"]  # fmt: skip
    base, params = float(dense.metric(metric)), float(dense.parameters)
    rows: list[list[Any]] = [["dense", 1.0, 1.0, 1.0, 0.0, base, 0.0, int(dense.parameters), 100.0,
                              dense.encoder_parameters]]  # fmt: skip
    for m in members:
        value = float(m.metric(metric))
        rows.append([m.member, m.target_speedup, m.predicted_speedup, m.measured_speedup, m.deviation, value,
                     value - base, int(m.parameters), 100 * m.parameters / params, m.encoder_parameters])  # fmt: skip
    return columns, rows


def log_sweep_report(
    logger_cfg: Mapping[str, Any],
    out: Path,
    group: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    plots: Sequence[Path],
    markdown: Path,
) -> bool:
    """W&B only: the sweep table (a ``wandb.Table``) and its Pareto plots, as one run in the sweep's group.

    Returns whether anything was logged (False for other logger kinds). Offline by default, like runs.
    """
    if not is_wandb(logger_cfg):
        return False
    import wandb

    mode: Any = _wandb_mode(logger_cfg)
    run = wandb.init(
        project=str(logger_cfg.get("project", "ziplm")),
        group=str(logger_cfg.get("group") or group),
        name=f"sweep report: {group}",
        job_type="sweep-report",
        tags=["sweep-report", *list(logger_cfg.get("tags") or [])],
        dir=str(out),
        mode=mode,
        reinit=True,  # a new run even if a job of this process left one open
    )
    try:
        data = [[None if v == "" else v for v in row] for row in rows]  # numbers stay numbers, blanks None
        table = wandb.Table(columns=list(columns), data=data)
        run.log({"sweep": table, **{f"pareto/{p.stem}": wandb.Image(str(p)) for p in plots}})
        run.summary["report"] = str(markdown)
    finally:
        run.finish()
    print(f"logged the sweep report to W&B ({run.settings.mode}): group {group}", file=sys.stderr)
    return True
