"""``ziplm report <dir>``: one table and Pareto plots from every run under a folder (sweeps included).

Writes sweep.md, sweep.csv and ``pareto_<model>_<task>_<hardware>.png`` into ``<dir>`` itself, beside
the runs it summarises (the same files a multirun's SweepReportCallback writes into its sweep folder).
With ``report.publish=<folder>`` it also writes a self-contained copy there (see `ziplm.report.publish`),
so committed results come from this command alone.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ziplm.report.publish import check_publish_target, publish_report
from ziplm.report.sweep import SweepTable, collect_runs, report_group
from ziplm.report.sweep_render import CSV_COLUMNS, csv_rows, write_sweep_report
from ziplm.report.tracking import RunLabels, log_sweep_report


def _report_root(value: object) -> Path:
    """The folder to report on; missing, empty or not-a-folder inputs fail with what to pass instead."""
    if value is None or not str(value).strip():
        raise ValueError(
            "ziplm report needs a folder: `ziplm report <dir>` (or report.dir=<dir>), e.g. outputs/multirun"
        )
    root = Path(str(value))
    if not root.exists():
        raise FileNotFoundError(f"report folder {root} does not exist; pass a run or sweep folder under outputs/")
    if not root.is_dir():
        raise ValueError(f"report folder {root} is a file, not a folder; pass the folder that holds the runs")
    if not any(root.iterdir()):
        raise ValueError(f"report folder {root} is empty: no runs to report; pass a folder with ziplm run outputs")
    return root


def summary(table: SweepTable) -> str:
    """One line: runs by status and where the failures are."""
    failed = [f"{run.path} ({run.status}: {run.reason})" for run in table.failures]
    line = f"{len(table.runs)} runs, {len(table.records)} measured models, {len(failed)} failed or incomplete"
    return line + ("".join(f"\n  {f}" for f in failed) if failed else "")


def run_report(cfg: DictConfig) -> None:
    """Collect every pruning run under ``cfg.report.dir`` and write the sweep report there."""
    root = _report_root(cfg.report.dir)
    publish = check_publish_target(cfg.report.get("publish"), root)  # before anything is written
    table = collect_runs(root)
    if not table.runs:
        skipped = f" (only other commands' runs: {', '.join(table.skipped)})" if table.skipped else ""
        raise ValueError(
            f"no ziplm runs found under {root}{skipped}; a run folder is one with .hydra/config.yaml written by "
            "`ziplm run` (outputs/run/<name>/<time>/ or outputs/multirun/<name>/<time>/<n>/)"
        )
    references = bool(cfg.report.references)
    report = write_sweep_report(table, root, references=references)
    rows = [[row[c] for c in CSV_COLUMNS] for row in csv_rows(table, references)]
    logger = OmegaConf.to_container(cfg.logger, resolve=True)
    assert isinstance(logger, dict)
    log_sweep_report(
        {str(k): v for k, v in logger.items()},
        root,
        report_group(table),
        CSV_COLUMNS,
        rows,
        report.plots,
        report.markdown,
    )
    console = Console()
    console.print(summary(table))
    console.print(f"[green]report[/green]: {report.markdown}  table: {report.csv}  plots: {len(report.plots)}")
    if publish is not None:
        command = ["ziplm", "report", str(root), f"report.publish={publish}"]
        command += [] if references else ["report.references=false"]
        published = publish_report(table, publish, references, shlex.join(command))
        console.print(f"[green]published[/green]: {published.index} ({len(published.runs)} runs)")


def tracker_labels(cfg: DictConfig) -> RunLabels:
    """The W&B name, group and tags of a pruning run (sweep jobs carry their sweep's id and job number)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    sweep, job = None, None
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        hydra_cfg = HydraConfig.get()
        sweep, job = Path(str(hydra_cfg.sweep.dir)).name, int(hydra_cfg.job.num)
    return RunLabels(
        experiment=str(cfg.name),
        model=str(cfg.model.name),
        task=str(cfg.task.name),
        hardware=str(cfg.hardware.name),
        schedule=str(cfg.schedule.name),
        method=str(cfg.pruner.method),
        targets=tuple(float(t) for t in cfg.search.targets),
        sweep=sweep,
        job=job,
    )
