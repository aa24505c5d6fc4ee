"""Experiment tracking: the same metrics, table, plot and latency table go to W&B (offline by default)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ziplm.lit.trainer import make_logger


class Tracker:
    """Wraps the Lightning logger of the run so pipelines log members and reports in one place."""

    def __init__(self, logger_cfg: Mapping[str, Any], out: Path, run_name: str) -> None:
        self.kind = str(logger_cfg.get("kind", "none"))
        self.lightning_logger = make_logger(dict(logger_cfg), out, run_name)

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
