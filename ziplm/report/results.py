"""End-of-run report: results.md (a table a newcomer can read) and a plot of metric vs measured speedup."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt

from ziplm.report.records import MemberRecord


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "—" if value is None else str(value)


def _millions(count: int | None) -> str:
    return "—" if count is None else f"{count / 1e6:.2f}"  # runs from before encoder counts were recorded


def results_rows(
    dense: MemberRecord, members: Sequence[MemberRecord], metric: str
) -> tuple[list[str], list[list[str]]]:
    """The results table as (header, rows of formatted cells): one row for the dense model, one per member."""
    dense_metric, dense_params = dense.metric(metric), float(dense.parameters)
    header = ["model", "target", "predicted", "measured", "deviation", metric, "Δ vs dense", "params (M)", "% params",
              "blocks (M)"]  # fmt: skip
    rows = [["dense", "1.00×", "1.00×", "1.00×", "—", _fmt(dense_metric), "—", f"{dense_params / 1e6:.2f}", "100.0",
             _millions(dense.encoder_parameters)]]  # fmt: skip
    for m in members:
        assert m.target_speedup is not None and m.predicted_speedup is not None
        assert m.measured_speedup is not None and m.deviation is not None
        rows.append(
            [
                m.member,
                f"{m.target_speedup:.2f}×",
                f"{m.predicted_speedup:.2f}×",
                f"{m.measured_speedup:.2f}×",
                f"{100 * m.deviation:+.1f}%" + _status(m),
                _fmt(m.metric(metric)),
                f"{float(m.metric(metric)) - float(dense_metric):+.2f}",
                f"{m.parameters / 1e6:.2f}",
                f"{100 * m.parameters / dense_params:.1f}",
                _millions(m.encoder_parameters),
            ]
        )
    return header, rows


def results_table(dense: MemberRecord, members: Sequence[MemberRecord], metric: str) -> str:
    """Markdown table of `results_rows`."""
    header, rows = results_rows(dense, members, metric)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _status(member: MemberRecord) -> str:
    """A miss is said in the row itself: a member more than the tolerance below its target is not a hit."""
    if member.target_status in (None, "on target"):
        return ""
    return " **missed**" if member.target_status == "missed" else " (faster)"


def timing_note(noise: Any, tolerance: float | None) -> str:
    """The run's timing noise floor (dense vs its own copy) and the tolerance members were judged with."""
    return (
        f"timing noise floor: the dense model measured {noise.speedup:.3f}× against its own copy "
        f"(±{100 * noise.half_width:.1f}%, {noise.rounds} rounds); members judged within "
        f"±{100 * (tolerance or 0):.1f}% of their targets (search.speedup_tolerance, raised to twice the noise "
        "floor when that is larger)"
    )


def correction_notes(members: Sequence[MemberRecord]) -> list[str]:
    """One line per member whose search target was corrected from measurement: what each try measured."""
    notes = []
    for m in members:
        attempts = m.attempts or []
        if len(attempts) < 2:
            continue
        tried = "; ".join(
            f"searched at {a['search_target']:.2f}× (table {a['predicted']:.2f}×) → measured {a['measured']:.2f}×"
            for a in attempts
        )
        notes.append(
            f"member {m.member}: {tried}; kept the one searched at {m.search_target:.2f}× (of those measured at "
            f"least {m.target_speedup:.2f}× × (1 − tolerance), the closest; else the fastest)"
        )
    return notes


def plot_metric_vs_speedup(
    dense: MemberRecord,
    members: Sequence[MemberRecord],
    metric: str,
    title: str,
    path: Path,
    baselines: Sequence[MemberRecord] = (),
) -> Path:
    """PNG: task metric against *measured* speedup, dense model at 1×, targets marked; baselines measured in
    the same run as labelled squares."""
    xs = [1.0] + [float(m.measured_speedup or 0.0) for m in members]
    ys = [float(dense.metric(metric))] + [float(m.metric(metric)) for m in members]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(xs, ys, "o-", label="ZipLM family (measured speedup)")
    ax.scatter([1.0], [ys[0]], marker="*", s=150, zorder=3, label="dense")
    for m, x, y in zip(members, xs[1:], ys[1:], strict=True):
        ax.annotate(f"target {m.target_speedup:g}×", (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
    if baselines:
        bx = [float(b.measured_speedup or 0.0) for b in baselines]
        by = [float(b.metric(metric)) for b in baselines]
        ax.scatter(bx, by, marker="s", s=40, zorder=3, label="baselines (measured here)")
        for b, x, y in zip(baselines, bx, by, strict=True):
            ax.annotate(b.member, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set_xlabel("measured speedup over dense (×)")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def baseline_section(dense: MemberRecord, baselines: Sequence[MemberRecord], metric: str) -> list[str]:
    """Markdown lines: the baselines measured in this run (same data, precision, environment, dense model)."""
    if not baselines:
        return []
    base, params = float(dense.metric(metric)), float(dense.parameters)
    header = [
        "baseline",
        "measured",
        metric,
        "Δ vs dense",
        "params (M)",
        "% params",
        "blocks (M)",
        "checkpoint",
        "source",
    ]
    lines = ["## Baselines measured here (same evaluation, timed against the same dense model)", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for b in baselines:
        value = float(b.metric(metric))
        lines.append(
            f"| {b.member} | {float(b.measured_speedup or 0):.2f}× | {value:.2f} | {value - base:+.2f} | "
            f"{b.parameters / 1e6:.2f} | {100 * b.parameters / params:.1f} | {_millions(b.encoder_parameters)} | "
            f"{b.other.get('checkpoint', '')} | {b.other.get('citation', '')} |"
        )
    return [*lines, ""]


def write_report(
    out: Path,
    dense: MemberRecord,
    members: Sequence[MemberRecord],
    metric: str,
    title: str,
    notes: Sequence[str] = (),
    baselines: Sequence[MemberRecord] = (),
) -> tuple[str, Path]:
    """Write results.md, results.png and a consolidated metrics.jsonl; return (markdown, plot path)."""
    table = results_table(dense, members, metric)
    plot = plot_metric_vs_speedup(dense, members, metric, title, out / "results.png", baselines)
    body = [
        f"# {title}",
        "",
        table,
        *baseline_section(dense, baselines, metric),
        "![metric vs measured speedup](results.png)",
        "",
    ]
    body += [f"- {n}" for n in notes]
    (out / "results.md").write_text("\n".join(body) + "\n")
    with (out / "metrics.jsonl").open("w") as fh:
        for record in [dense, *members, *baselines]:
            fh.write(json.dumps(record.to_json()) + "\n")
    return table, plot
