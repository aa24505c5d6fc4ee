"""Experiment tracking: the same metrics, table, plot and latency table go to W&B (offline by default)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def make_logger(logger: Mapping[str, Any], save_dir: Path, run_name: str) -> Logger | bool:
    """The run's Lightning logger: W&B (offline unless the user opts in), CSV, or none (False).

    Lightning is imported here, only by runs that log; `make_trainer` (``ziplm.lit.trainer``) takes the result.
    """
    kind = logger.get("kind", "none")
    if kind == "none":
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(save_dir), name="csv")
    if kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        mode = os.environ.get("WANDB_MODE", logger.get("mode", "offline"))
        return WandbLogger(
            project=logger.get("project", "ziplm"),
            name=run_name,
            group=logger.get("group"),
            tags=list(logger.get("tags", [])),
            save_dir=str(save_dir),
            mode=mode,
        )
    raise ValueError(f"unknown logger kind {kind!r}; choose wandb, csv or none")


class Tracker:
    """Wraps the Lightning logger of the run so pipelines log members and reports in one place.

    `run` is a plain run name or `RunLabels` (which also set the W&B group and tags).
    """

    def __init__(self, logger_cfg: Mapping[str, Any], out: Path, run: str | RunLabels) -> None:
        self.kind = str(logger_cfg.get("kind", "none"))
        settings = dict(logger_cfg)
        if isinstance(run, RunLabels):
            settings["group"] = run.group(logger_cfg.get("group"))
            settings["tags"] = run.tags(list(logger_cfg.get("tags") or []))
        self.lightning_logger = make_logger(settings, out, run.name if isinstance(run, RunLabels) else run)

    def log_member(self, record: Mapping[str, Any], step: int) -> None:
        """Numeric fields of a member record (dense is step 0)."""
        logger = self.lightning_logger
        if not logger or isinstance(logger, bool):
            return
        numbers = {f"family/{k}": float(v) for k, v in record.items() if isinstance(v, int | float)}
        logger.log_metrics(numbers, step=step)

    def log_report(self, table_markdown: str, plot: Path, latency_table: Path) -> None:
        """W&B only: the results table, the plot and the latency table as an artifact."""
        logger = self.lightning_logger
        if self.kind != "wandb" or isinstance(logger, bool):
            return
        import wandb

        run = logger.experiment
        rows = [r.strip("|").split("|") for r in table_markdown.strip().splitlines()]
        header, body = [c.strip() for c in rows[0]], [[c.strip() for c in r] for r in rows[2:]]
        run.log({"results": wandb.Table(columns=header, data=body), "metric_vs_speedup": wandb.Image(str(plot))})
        artifact = wandb.Artifact("latency-table", type="latency-table")
        artifact.add_file(str(latency_table))
        run.log_artifact(artifact)
        run.finish()


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
    if str(logger_cfg.get("kind", "none")) != "wandb":
        return False
    import wandb

    mode: Any = os.environ.get("WANDB_MODE", str(logger_cfg.get("mode", "offline")))
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
