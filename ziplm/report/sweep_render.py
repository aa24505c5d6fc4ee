"""Rendering a `SweepTable`: sweep.csv rows, sweep.md, and one Pareto plot per model × task × hardware.

`ziplm.report.sweep` reads run folders into the table; this module renders and writes it (it imports
`sweep`, never the other way round)."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ziplm.report.gap import metric_at
from ziplm.report.pareto import ReferencePoint, Series, plot_pareto
from ziplm.report.references import ReferenceRow
from ziplm.report.seeds import across_seeds
from ziplm.report.sweep import Record, SweepTable

Group = tuple[str, str, str]  # model, task, hardware
PUBLISHED = "quoted, other hardware"
CSV_COLUMNS = (
    "run", "status", "kind", "model", "task", "hardware", "schedule", "method", "seed", "member", "target",
    "predicted_speedup", "measured_speedup", "deviation", "parameters", "metric", "metric_name", "citation",
    "overrides",
)  # fmt: skip


def _cell(value: object) -> object:
    return "" if value is None else value


def csv_rows(table: SweepTable, references: bool = True) -> list[dict[str, object]]:
    """One row per dense/member record, then one per published reference (kind says which)."""
    rows: list[dict[str, object]] = []
    for r in table.records:
        run = r.run
        rows.append(
            {
                "run": run.path, "status": run.status, "kind": "measured", "model": run.model, "task": run.task,
                "hardware": run.hardware, "schedule": run.schedule, "method": r.method or run.method,
                "seed": _cell(run.seed),
                "member": r.member, "target": _cell(r.target), "predicted_speedup": _cell(r.predicted),
                "measured_speedup": _cell(r.measured), "deviation": _cell(r.deviation),
                "parameters": _cell(r.parameters), "metric": _cell(r.metric), "metric_name": run.metric,
                "citation": r.citation, "overrides": " ".join(run.overrides),
            }
        )  # fmt: skip
    for ref in table.references if references else []:
        rows.append(
            {
                **dict.fromkeys(CSV_COLUMNS, ""), "kind": PUBLISHED, "model": ref.model, "task": ref.task,
                "hardware": ref.measured_on or "", "method": ref.method, "measured_speedup": _cell(ref.speedup),
                "metric": ref.metric, "metric_name": ref.metric_name, "citation": ref.citation,
            }
        )  # fmt: skip
    return rows


def render_csv(rows: Sequence[dict[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def slug(text: str) -> str:
    """A file-name-safe form of a model/task/hardware name."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "unnamed"


def plot_name(group: Group) -> str:
    return "pareto_" + "_".join(slug(part) for part in group) + ".png"


def _series(records: Sequence[Record]) -> list[Series]:
    """Points per method (per method and schedule when the group mixes schedules)."""
    mixed = len({r.run.schedule for r in records}) > 1
    points: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if r.measured is None or r.metric is None:
            continue
        method = r.method or r.run.method
        label = f"{method}, {r.run.schedule}" if mixed and r.method is None else method
        points.setdefault(label, []).append((r.measured, r.metric))
    return [Series(label, pts) for label, pts in sorted(points.items())]


def plot_group(table: SweepTable, group: Group, out_dir: Path, references: bool) -> Path | None:
    """The group's Pareto plot (metric vs measured speedup), or None when it has no measured points."""
    runs = [run for run in table.runs if (run.model, run.task, run.hardware) == group]
    metric, higher = runs[0].metric, runs[0].higher_is_better
    records = [r for r in table.records if (r.run.model, r.run.task, r.run.hardware) == group]
    series = _series([r for r in records if r.run.metric == metric])
    if not series:
        return None
    refs = [
        ReferencePoint(ref.label, ref.speedup, ref.metric)
        for ref in _group_references(table, group, references)
        if ref.speedup is not None and ref.metric_name == metric
    ]
    title = f"{group[0]} on {group[1]}, {group[2]} environment: {metric} vs measured speedup"
    bars = [(*s.measured, *s.metric) for s in across_seeds([r for r in records if r.run.metric == metric])]
    return plot_pareto(series, refs, metric, higher, title, out_dir / plot_name(group), bars)


def _group_references(table: SweepTable, group: Group, references: bool) -> list[ReferenceRow]:
    if not references:
        return []
    return [ref for ref in table.references if (ref.model, ref.task, ref.hardware) == group]


def _seed_lines(records: Sequence[Record], metric: str) -> list[str]:
    """Mean ± std over seeds of every member run under two or more seeds of one configuration."""
    spreads = across_seeds(records)
    if not spreads:
        return []
    header = ["method", "schedule", "overrides", "member", "seeds", "measured", metric]
    lines = ["", "Across seeds (mean ± sample std; runs that differ only in `seed`):", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in spreads:
        lines.append(
            f"| {s.method} | {s.schedule} | {' '.join(s.overrides)} | {s.member} | {s.seeds} | "
            f"{s.measured[0]:.2f}× ± {s.measured[1]:.2f} | {s.metric[0]:.2f} ± {s.metric[1]:.2f} |"
        )
    return lines


def _family_at(records: Sequence[Record], ref: ReferenceRow) -> float | None:
    """The ZipLM family's metric at the reference's speedup, on its measured Pareto front (dense included);
    None when the reference has no speedup, another metric, or lies outside the measured speedups."""
    ours = [r for r in records if r.method is None and r.run.method == "obs" and r.run.metric == ref.metric_name]
    points = [(r.measured, r.metric) for r in ours if r.measured is not None and r.metric is not None]
    if ref.speedup is None or not ours:
        return None
    return metric_at(points, ref.speedup, ours[0].run.higher_is_better)


def common_overrides(table: SweepTable) -> tuple[str, ...]:
    """Overrides every run shares (output_root=..., the experiment): said once, not on every row."""
    sets = [set(run.overrides) for run in table.runs]
    shared = set.intersection(*sets) if len(sets) > 1 else set()
    return tuple(o for o in table.runs[0].overrides if o in shared) if shared else ()


def _varying(overrides: tuple[str, ...], common: tuple[str, ...]) -> str:
    return " ".join(o for o in overrides if o not in common) or "—"


def _group_markdown(table: SweepTable, group: Group, plot: Path | None, references: bool) -> list[str]:
    records = [r for r in table.records if (r.run.model, r.run.task, r.run.hardware) == group]
    common = common_overrides(table)
    metric = next(run.metric for run in table.runs if (run.model, run.task, run.hardware) == group)
    lines = [f"## {group[0]} · {group[1]} · {group[2]}", ""]
    if plot is not None:
        lines += [f"![{metric} vs measured speedup]({plot.name})", ""]
    if records:
        lines += [
            f"| run | overrides | status | schedule | method | member | target | predicted | measured | deviation "
            f"| params (M) | {metric} |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in records:
            params = None if r.parameters is None else r.parameters / 1e6
            deviation = None if r.deviation is None else 100 * r.deviation
            lines.append(
                f"| {r.run.path} | {_varying(r.run.overrides, common)} | {r.run.status} | {r.run.schedule} | "
                f"{r.method or r.run.method} | {r.member} | {fmt(r.target, suffix='×')} | "
                f"{fmt(r.predicted, suffix='×')} | "
                f"{fmt(r.measured, suffix='×')} | {fmt(deviation, 1, '%')} | {fmt(params)} | {fmt(r.metric)} |"
            )
    else:
        lines.append("No finished records in this group.")
    lines += _seed_lines(records, metric)
    refs = _group_references(table, group, references)
    if refs:
        lines += [
            "",
            f"Reference numbers — **{PUBLISHED}** (from the experiment presets; other hardware and recipes, for "
            "context only):",
            "",
            "| method | citation | measured on | speedup | metric | value | ZipLM here at that speedup | Δ | note |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for ref in refs:
            ours = _family_at(records, ref)
            gap = None if ours is None else ours - ref.metric
            lines.append(
                f"| {ref.method} ({PUBLISHED}) | {ref.citation} | {ref.measured_on or '—'} | "
                f"{fmt(ref.speedup, suffix='×')} | {ref.metric_name} | {fmt(ref.metric)} | {fmt(ours)} | "
                f"{'—' if gap is None else f'{gap:+.2f}'} | {ref.note or ''} |"
            )
    return [*lines, ""]


def render_markdown(table: SweepTable, plots: dict[Group, Path | None], references: bool = True) -> str:
    """sweep.md: a summary line, one section per group, then failures, skipped folders and warnings."""
    counts = {s: sum(run.status == s for run in table.runs) for s in ("finished", "failed", "incomplete")}
    lines = [
        f"# Sweep report: {table.root}",
        "",
        f"{len(table.runs)} runs: {counts['finished']} finished, {counts['failed']} failed, "
        f"{counts['incomplete']} incomplete; {len(table.records)} measured models. Speedups are measured "
        "end to end against the run's dense model; deviation = measured/target − 1. Data: sweep.csv.",
        "",
    ]
    common = common_overrides(table)
    if common:
        lines += [f"Overrides shared by every run: `{' '.join(common)}` (the tables show the others).", ""]
    for group in table.groups():
        lines += _group_markdown(table, group, plots.get(group), references)
    lines += ["## Failed or incomplete runs", ""]
    if table.failures:
        lines += ["| run | status | model | task | overrides | reason |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {run.path} | {run.status} | {run.model} | {run.task} | {_varying(run.overrides, common)} | "
            f"{(run.reason or '').replace('|', '/')} |"
            for run in table.failures
        ]
    else:
        lines.append("None.")
    if table.skipped:
        lines += ["", f"Skipped (not pruning runs): {', '.join(table.skipped)}."]
    if table.warnings:
        lines += ["", "## Warnings", "", *[f"- {w}" for w in table.warnings]]
    return "\n".join(lines) + "\n"


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    """A table cell: '—' for missing values."""
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}{suffix}"


@dataclass(frozen=True)
class SweepReport:
    """The files `write_sweep_report` wrote."""

    markdown: Path
    csv: Path
    plots: list[Path]


def write_sweep_report(table: SweepTable, out_dir: str | Path, references: bool = True) -> SweepReport:
    """Write sweep.csv, sweep.md and ``pareto_<model>_<task>_<hardware>.png`` per group into `out_dir`.

    Args:
        table: from `collect_runs`.
        out_dir: created if needed (a sweep folder, or the folder given to ``ziplm report``).
        references: include the presets' published numbers (marked "quoted, other hardware").
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = {group: plot_group(table, group, out, references) for group in table.groups()}
    csv_path = out / "sweep.csv"
    csv_path.write_text(render_csv(csv_rows(table, references)))
    md_path = out / "sweep.md"
    md_path.write_text(render_markdown(table, plots, references))
    return SweepReport(md_path, csv_path, [p for p in plots.values() if p is not None])
