"""``ziplm report <dir> report.publish=<folder>``: a self-contained copy of a report, for committing.

Results committed under ``experiments/results/<name>/`` must come from the project's own commands, never
from hand edits or hand copies. This module writes that copy: the sweep report (regenerated in the publish
folder, so its image links resolve there), per run ``runs/<label>/`` with the small files that show what
the run measured and how it was made, and ``publish.md``, an index of the source folder, every run's command
line, commit and machine. Weights, databases and caches are never copied (only a fixed list of files is).
Files this module writes are replaced on every publish; anything else in the folder (a README.md) is kept.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ziplm.report.provenance import PROVENANCE_FILE, read_provenance
from ziplm.report.sweep import RunInfo, SweepTable
from ziplm.report.sweep_render import SweepReport, common_overrides, write_sweep_report

INDEX_FILE = "publish.md"
RUNS_DIR = "runs"
# (source inside the run folder, name in runs/<label>/): small, human-readable records only.
RUN_FILES = (
    ("results.md", "results.md"),
    ("results.png", "results.png"),
    (PROVENANCE_FILE, PROVENANCE_FILE),
    (".hydra/overrides.yaml", "overrides.yaml"),
    ("metrics.jsonl", "metrics.jsonl"),
    ("latency_table.json", "latency_table.json"),
    ("FAILED", "FAILED"),  # a failed sweep job's error, so the copy says why it has no results
)
# Overrides that say where a run wrote, not what it ran: left out of the run labels.
_PLACE_KEYS = ("output_root", "cache_dir", "hydra.", "logger", "command")
_LABEL_CHARS = 60


@dataclass(frozen=True)
class PublishedRun:
    """One run's folder in the publish copy."""

    run: RunInfo
    label: str
    files: tuple[str, ...]  # names written into runs/<label>/
    provenance: dict[str, Any] | None


@dataclass(frozen=True)
class Published:
    """What `publish_report` wrote."""

    folder: Path
    report: SweepReport
    index: Path
    runs: list[PublishedRun]


def check_publish_target(value: object, root: Path) -> Path | None:
    """The publish folder (None when unset); refused when it is a file, the report folder or inside it, or
    holds the report folder (a copy mixed with its sources could never be cleaned safely)."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        raise ValueError("report.publish is empty; pass a folder, e.g. report.publish=experiments/results/<name>")
    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"report.publish={folder} is a file; pass a folder (created if missing)")
    source, target = root.resolve(), folder.resolve()
    if target == source or source in target.parents:
        raise ValueError(
            f"report.publish={folder} is inside the report folder {root}; publish outside it, "
            "e.g. report.publish=experiments/results/<name>"
        )
    if target in source.parents:
        raise ValueError(
            f"report.publish={folder} holds the report folder {root}; publish into a folder of its own, "
            "e.g. report.publish=experiments/results/<name>"
        )
    return folder


def _label_slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-.")


def run_labels(table: SweepTable) -> dict[str, str]:
    """A short, unique, file-name-safe label per run path: ``<index>-<method>[-<distinctive overrides>]``.

    The index (natural order of the run folders, as sweep.md lists them) keeps labels unique; the method and
    the overrides that set this run apart from the others make them readable (``03-obs-seed-1``).
    """
    common = set(common_overrides(table))
    width = max(2, len(str(len(table.runs) - 1)))
    labels: dict[str, str] = {}
    for index, run in enumerate(table.runs):
        parts = [f"{index:0{width}d}", _label_slug(run.method) or "run"]
        for override in run.overrides:
            key, _, value = override.lstrip("+~").partition("=")
            if override in common or key.startswith(_PLACE_KEYS) or key == "pruner.method":
                continue
            part = _label_slug(f"{key.rsplit('.', 1)[-1]}-{value}" if value else key)
            if part:
                parts.append(part)
        label = "-".join(parts)[:_LABEL_CHARS].rstrip("-.")
        labels[run.path] = label
    return labels


def _clear_previous(folder: Path) -> None:
    """Remove what an earlier publish wrote (stale plots and run folders too); leave every other file."""
    for name in ("sweep.md", "sweep.csv", INDEX_FILE):
        (folder / name).unlink(missing_ok=True)
    for plot in folder.glob("pareto_*.png"):
        if plot.is_file():
            plot.unlink()
    runs = folder / RUNS_DIR
    if runs.is_dir():
        for child in runs.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)


def _copy_run(source: Path, target: Path) -> tuple[str, ...]:
    target.mkdir(parents=True)
    written = []
    for name, copy_as in RUN_FILES:
        path = source / name
        if path.is_file():
            shutil.copyfile(path, target / copy_as)
            written.append(copy_as)
    return tuple(written)


def _provenance(folder: Path) -> dict[str, Any] | None:
    """A run's provenance.json; an unreadable one counts as missing (the copy says "unknown")."""
    try:
        record = read_provenance(folder)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _machine(record: dict[str, Any]) -> str:
    machine = record.get("machine") or {}
    text = f"{machine.get('processor')} × {machine.get('cpus')} CPUs, {machine.get('platform')}"
    return text + (f", {machine['accelerator']}" if machine.get("accelerator") else "")


def _commit(record: dict[str, Any] | None) -> str:
    if not record:
        return "unknown (no provenance.json)"
    commit = str(record.get("commit") or "no git checkout")[:12]
    return commit + (" (uncommitted changes)" if record.get("dirty") else "")


def render_index(table: SweepTable, runs: Sequence[PublishedRun], report: SweepReport, command: str) -> str:
    """publish.md: where this copy came from and, per run, its command line, commit and machine."""
    commits: dict[str, int] = {}
    for item in runs:
        commits[_commit(item.provenance)] = commits.get(_commit(item.provenance), 0) + 1
    lines = [
        f"# Published report: {table.root}",
        "",
        f"Written by `{command}` from the runs under `{table.root}`; do not edit by hand, run it again.",
        "",
        f"- report: [sweep.md](sweep.md), table [sweep.csv](sweep.csv), "
        f"{len(report.plots)} Pareto plot(s): " + (", ".join(f"[{p.name}]({p.name})" for p in report.plots) or "none"),
        f"- runs: {len(runs)} ({sum(r.run.status == 'finished' for r in runs)} finished), one folder each under "
        f"`{RUNS_DIR}/`",
        "- commits: " + "; ".join(f"`{c}` ({n} run{'s' * (n != 1)})" for c, n in commits.items()),
        "",
    ]
    for item in runs:
        record, run = item.provenance, item.run
        lines += [
            f"## [{item.label}]({RUNS_DIR}/{item.label}/)",
            "",
            f"- source: `{run.path}` ({run.status}{f': {run.reason}' if run.reason else ''})",
            f"- what: {run.model} · {run.task} · {run.hardware}, schedule {run.schedule}, method {run.method}, "
            f"targets {', '.join(f'{t:g}×' for t in run.targets) or '—'}, seed {run.seed}",
            f"- overrides: `{' '.join(run.overrides) or '—'}`",
            f"- command: `{record['command']}`" if record and record.get("command") else "- command: unknown",
            f"- commit: {_commit(record)}",
        ]
        if record:
            lines.append(f"- machine: {_machine(record)}")
            if record.get("started"):
                lines.append(f"- started: {record['started']}")
        files = ", ".join(f"[{f}]({RUNS_DIR}/{item.label}/{f})" for f in item.files)
        lines += [f"- files: {files or 'none'}", ""]
    return "\n".join(lines)


def publish_report(table: SweepTable, folder: Path, references: bool, command: str) -> Published:
    """Write the self-contained copy of `table`'s report into `folder` (created if needed).

    Args:
        table: from `collect_runs` (its ``root`` is the source folder named in the copy).
        folder: checked by `check_publish_target`.
        references: as for the report itself.
        command: the ``ziplm report`` command line, quoted in publish.md.
    """
    folder.mkdir(parents=True, exist_ok=True)
    _clear_previous(folder)
    report = write_sweep_report(table, folder, references=references)
    labels = run_labels(table)
    runs = []
    for run in table.runs:
        source = table.root / run.path
        files = _copy_run(source, folder / RUNS_DIR / labels[run.path])
        runs.append(PublishedRun(run, labels[run.path], files, _provenance(source)))
    index = folder / INDEX_FILE
    index.write_text(render_index(table, runs, report, command))
    return Published(folder, report, index, runs)
