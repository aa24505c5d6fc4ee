"""Every run under a folder in one table: collect single runs and sweep jobs, list the failures.

A *run folder* is any folder with ``.hydra/config.yaml`` (``ziplm run`` and each multirun job). Its
records are ``dense_metrics.json`` and ``family/<t>x/metrics.json``; ``results.md`` marks it finished,
a ``FAILED`` file (written by the CLI for a sweep job that raised) or a traceback in ``ziplm.log``
marks it failed, anything else is incomplete. Failed and incomplete runs are always listed with a
reason; the finished members of an incomplete run are still real measurements and stay in the table.
"""

from __future__ import annotations

import json
import os
import re
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ziplm.report.references import ReferenceRow, parse_references

FAILED_MARKER = "FAILED"
PRUNING_COMMANDS = ("run", "prune")  # commands whose run folders hold a family
Status = Literal["finished", "failed", "incomplete"]


@dataclass(frozen=True)
class RunInfo:
    """One run folder: what it ran (from its composed config) and how it ended."""

    path: str  # relative to the collected root, POSIX separators; "." for the root itself
    experiment: str
    model: str
    task: str
    hardware: str
    schedule: str
    method: str
    targets: tuple[float, ...]
    seed: int | None
    overrides: tuple[str, ...]
    metric: str  # the task's headline metric
    higher_is_better: bool
    status: Status
    reason: str | None = None
    logger: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    """One measured model: the dense teacher of a run (target None), one family member, or a baseline measured
    in the run (``method`` "baseline <label>", its ``citation``)."""

    run: RunInfo
    member: str
    target: float | None
    predicted: float | None
    measured: float | None
    deviation: float | None
    parameters: int | None
    metric: float | None
    method: str | None = None  # None: the run's method
    citation: str = ""


@dataclass
class SweepTable:
    """What `collect_runs` found under `root`."""

    root: Path
    runs: list[RunInfo]
    records: list[Record]
    references: list[ReferenceRow]
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # run folders of other commands (latency, eval ...)

    @property
    def failures(self) -> list[RunInfo]:
        return [run for run in self.runs if run.status != "finished"]

    def groups(self) -> list[tuple[str, str, str]]:
        """(model, task, hardware) of every run, in first-seen order."""
        return list(dict.fromkeys((r.model, r.task, r.hardware) for r in self.runs))


def write_failure(job_dir: Path, error: BaseException) -> Path:
    """Mark a sweep job as failed: first line ``<Type>: <message>``, then the traceback."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    path = job_dir / FAILED_MARKER
    path.write_text(f"{type(error).__name__}: {error}".splitlines()[0] + "\n\n" + text)
    return path


def _one_line(err: BaseException) -> str:
    """Parser errors span lines; a table cell or list item must not."""
    return " ".join(str(err).split())


def _natural_key(path: Path) -> list[Any]:
    """Job folders 0, 1, ..., 10 in numeric order."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def find_run_folders(root: Path) -> list[Path]:
    """Every folder under `root` (itself included) holding ``.hydra/config.yaml``; never inside one."""
    found = []
    for current, dirnames, _ in os.walk(root):
        here = Path(current)
        if (here / ".hydra" / "config.yaml").is_file():
            found.append(here)
            dirnames[:] = []  # a run's family/, database/, wandb/ hold no further runs
        else:
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "wandb"]
    return sorted(found, key=_natural_key)


def _traceback_reason(log: Path) -> str | None:
    """The exception line of the last traceback in a job's log, if it has one."""
    if not log.is_file():
        return None
    lines = log.read_text(errors="replace").splitlines()
    starts = [i for i, line in enumerate(lines) if "Traceback (most recent call last)" in line]
    if not starts:
        return None
    tail = [line.strip() for line in lines[starts[-1] + 1 :] if line.strip()]
    return tail[-1] if tail else "traceback in ziplm.log"


def _status(folder: Path, targets: tuple[float, ...]) -> tuple[Status, str | None]:
    marker = folder / FAILED_MARKER
    if marker.is_file():
        return "failed", marker.read_text(errors="replace").splitlines()[0] if marker.stat().st_size else "FAILED"
    if (folder / "results.md").is_file():
        return "finished", None
    reason = _traceback_reason(folder / "ziplm.log")
    if reason:
        return "failed", reason
    done = sum((folder / "family" / f"{t:g}x" / "metrics.json").is_file() for t in targets)
    return "incomplete", f"no results.md ({done} of {len(targets)} members done): still running, killed or interrupted"


def _metric_info(task_metric: str) -> tuple[str, bool]:
    from ziplm.eval.metric_info import METRICS

    info = METRICS.get(task_metric)
    return (info.headline, info.higher_is_better) if info else (task_metric, True)


def _floats(values: Any) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in values or ())
    except (TypeError, ValueError):
        return ()


def _mapping(cfg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    node = cfg.get(key)
    return node if isinstance(node, Mapping) else {}


def _read_run(folder: Path, root: Path, cfg: Mapping[str, Any]) -> RunInfo:
    def name(group: str) -> str:
        node = cfg.get(group)
        return str(node.get("name", "?")) if isinstance(node, Mapping) else "?"

    # Runs saved before the schedule group was split keep method/targets under `schedule`.
    schedule, task = _mapping(cfg, "schedule"), _mapping(cfg, "task")
    pruner, search = _mapping(cfg, "pruner"), _mapping(cfg, "search")
    metric, higher = _metric_info(str(task.get("metric", "?")))
    overrides_file = folder / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    targets = _floats(search.get("targets", schedule.get("targets")))
    status, reason = _status(folder, targets)
    seed = cfg.get("seed")
    return RunInfo(
        path=folder.relative_to(root).as_posix(),
        experiment=str(cfg.get("name", "?")),
        model=name("model"),
        task=name("task"),
        hardware=name("hardware"),
        schedule=name("schedule"),
        method=str(pruner.get("method", schedule.get("method", "obs"))),
        targets=targets,
        seed=seed if isinstance(seed, int) else None,
        overrides=tuple(str(o) for o in overrides or () if not str(o).startswith("command=")),
        metric=metric,
        higher_is_better=higher,
        status=status,
        reason=reason,
        logger=dict(_mapping(cfg, "logger")),
    )


def _number(record: Mapping[str, Any], key: str) -> float | None:
    value = record.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _records(folder: Path, run: RunInfo, warnings: list[str]) -> Iterator[Record]:
    files = [folder / "dense_metrics.json"] if (folder / "dense_metrics.json").is_file() else []
    files += sorted((folder / "family").glob("*/metrics.json"), key=lambda p: _natural_key(p.parent))
    files += sorted((folder / "baselines").glob("*/metrics.json"))
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            warnings.append(f"{run.path}: unreadable {path.relative_to(folder)} ({_one_line(err)}); left out")
            continue
        dense = path.name == "dense_metrics.json"
        metric = _number(data, f"metric/{run.metric}")
        if metric is None:
            warnings.append(f"{run.path}: {path.relative_to(folder)} has no metric/{run.metric}")
        parameters = _number(data, "parameters")
        yield Record(
            run=run,
            member="dense" if dense else str(data.get("member", path.parent.name)),
            target=None if dense else _number(data, "target_speedup"),
            predicted=1.0 if dense else _number(data, "predicted_speedup"),
            measured=1.0 if dense else _number(data, "measured_speedup"),
            deviation=None if dense else _number(data, "deviation"),
            parameters=None if parameters is None else int(parameters),
            metric=metric,
            method=f"baseline {data.get('member')}" if data.get("method") == "baseline" else None,
            citation=str(data.get("citation") or ""),
        )


def collect_runs(root: str | Path) -> SweepTable:
    """Every pruning run under `root` (recursively), its records, failures and reference rows.

    Raises:
        FileNotFoundError: `root` does not exist or is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}; pass a run folder or a sweep folder (outputs/multirun/...)")
    table = SweepTable(root=root, runs=[], records=[], references=[])
    seen_refs: set[ReferenceRow] = set()
    for folder in find_run_folders(root):
        rel = folder.relative_to(root).as_posix()
        try:
            cfg = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
            if not isinstance(cfg, Mapping):
                raise ValueError("not a mapping")
        except (OSError, yaml.YAMLError, ValueError) as err:
            table.warnings.append(f"{rel}: unreadable .hydra/config.yaml ({_one_line(err)}); left out")
            continue
        if str(cfg.get("command", "run")) not in PRUNING_COMMANDS:
            table.skipped.append(f"{rel} ({cfg.get('command')})")
            continue
        run = _read_run(folder, root, cfg)
        table.runs.append(run)
        table.records += _records(folder, run, table.warnings)
        names = {"model": run.model, "task": run.task, "hardware": run.hardware, "metric": run.metric}
        try:
            rows = parse_references(cfg.get("reference"), names)
        except ValueError as err:
            table.warnings.append(f"{rel}: reference block ignored: {err}")
            rows = []
        for row in rows:
            if row not in seen_refs:  # every job of a sweep carries the preset's rows
                seen_refs.add(row)
                table.references.append(row)
    return table


def report_group(table: SweepTable) -> str:
    """The W&B group of a report: the sweep's own (``<experiment>/<sweep folder>``) when `root` is a sweep
    folder of one experiment, as its jobs use (see `RunLabels.group`), else ``<experiment>`` or the folder."""
    experiments = {run.experiment for run in table.runs}
    if len(experiments) != 1:
        return f"report/{table.root.resolve().name}"
    (experiment,) = experiments
    jobs = all("/" not in run.path and run.path != "." for run in table.runs)
    return f"{experiment}/{table.root.resolve().name}" if jobs else experiment
