"""Hydra callback: when a multirun ends, write the sweep report (sweep.md/csv, Pareto plots) into its folder.

Registered in the config as ``hydra.callbacks.sweep_report`` (``conf/hydra/callbacks/sweep_report.yaml``).
It runs in the launching process for every launcher (basic, joblib, submitit), after all jobs ended.
The CLI keeps a failing job from aborting the sweep (it writes ``FAILED`` into the job folder), so the
report lists every job; the callback remembers the failures so ``ziplm`` can exit non-zero.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


@dataclass(frozen=True)
class SweepOutcome:
    """What the last sweep's report found: its folder and the jobs that did not finish."""

    sweep_dir: Path
    jobs: int
    failed: tuple[str, ...]  # "<job folder>: <reason>"
    report: Path | None


_last_outcome: SweepOutcome | None = None


def pop_last_outcome() -> SweepOutcome | None:
    """The outcome of the sweep that just ended in this process (then forgotten)."""
    global _last_outcome
    outcome, _last_outcome = _last_outcome, None
    return outcome


def _logger_settings(config: DictConfig) -> dict[str, Any]:
    node = config.get("logger")
    container = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    return {str(k): v for k, v in container.items()} if isinstance(container, dict) else {}


class SweepReportCallback(Callback):
    """Writes the sweep report when a multirun ends; never raises (a failing report is a warning).

    Args:
        references: include the presets' published numbers (default: ``report.references``).
        wandb: also log the table and plots to W&B when the sweep's logger is wandb.
    """

    def __init__(self, references: bool | None = None, wandb: bool = True) -> None:
        self.references = references
        self.wandb = wandb

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _last_outcome
        try:
            _last_outcome = self._report(config)
        except Exception as err:  # a report must never turn a finished sweep into a failed one
            print(f"warning: the sweep report could not be written: {type(err).__name__}: {err}", file=sys.stderr)

    def _report(self, config: DictConfig) -> SweepOutcome:
        from ziplm.report.sweep import collect_runs, report_group
        from ziplm.report.sweep_render import CSV_COLUMNS, csv_rows, write_sweep_report
        from ziplm.report.tracking import log_sweep_report

        sweep_dir = Path(str(config.hydra.sweep.dir))
        table = collect_runs(sweep_dir)
        failed = tuple(f"{run.path}: {run.reason}" for run in table.failures)
        if not table.runs:
            print(f"warning: no pruning runs under {sweep_dir}; no sweep report written", file=sys.stderr)
            return SweepOutcome(sweep_dir, 0, failed, None)
        default = config.get("report", {}).get("references", True)
        references = bool(default if self.references is None else self.references)
        report = write_sweep_report(table, sweep_dir, references=references)
        print(f"sweep report: {report.markdown} ({len(table.runs)} jobs, {len(failed)} failed or incomplete)")
        if self.wandb:
            try:
                rows = [[row[c] for c in CSV_COLUMNS] for row in csv_rows(table, references)]
                settings = _logger_settings(config)
                log_sweep_report(
                    settings, sweep_dir, report_group(table), CSV_COLUMNS, rows, report.plots, report.markdown
                )
            except Exception as err:  # W&B trouble must not hide the report on disk
                print(f"warning: the sweep report was not logged to W&B: {type(err).__name__}: {err}", file=sys.stderr)
        return SweepOutcome(sweep_dir, len(table.runs), failed, report.markdown)
