"""``ziplm serve-bench checkpoint=<member | HF folder | Hub id>``: latency percentiles and throughput under
concurrent requests.

The member is served next to a dense baseline in one interleaved run (see `ziplm.deploy.serving`), so
both see the same machine state; the speedups reported are of p50 latency and of throughput.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich import box
from rich.console import Console
from rich.table import Table
from torch import nn

from ziplm.deploy.serving import ServeResult, ServeSettings, dense_architecture, paired_speedups, serve_benchmark
from ziplm.latency.measure import device_name
from ziplm.models import count_parameters
from ziplm.models.checkpoint import Checkpoint, load_for_timing
from ziplm.pipelines.common import checkpoint_sources, configured_model
from ziplm.pipelines.outputs import run_dir

RANDOM_WEIGHTS_NOTE = (
    "dense baseline = the member's dense architecture with random weights (latency does not depend on weight values)"
)

SPEEDUP_NOTE = (
    "speedups (p50 x, thr x) are medians over the interleaved rounds of per-round ratios to dense, "
    "robust to machine drift; whole-run (pooled) ratios are in serve_bench.json and serve_bench.md"
)


def serve_settings(cfg: DictConfig) -> ServeSettings:
    """The ``serve`` group (+ ``hardware.threads``) as validated `ServeSettings`."""
    serve = cfg.serve
    threads = cfg.hardware.get("threads")
    return ServeSettings(
        concurrency=int(serve.concurrency),
        requests=int(serve.requests),
        batch_size=int(serve.batch_size),
        seq_length=int(serve.seq_length),
        warmup=int(serve.warmup),
        rounds=int(serve.rounds),
        threads=int(threads) if threads is not None else None,
        seed=int(cfg.seed),
    )


def load_baseline(source: str | None, member: Checkpoint, device: str, cfg: DictConfig) -> tuple[nn.Module, str]:
    """The dense model to compare with, and a line saying what it is.

    `source`: a ziplm folder, a plain Hugging Face folder, a Hub id or ``packaged:minilm``. Unset: a
    member's dense architecture with random weights; for a plain checkpoint, the configured ``model=``.
    """
    if source:
        baseline = load_for_timing(source, device, "serve.baseline")
        if baseline.is_member:
            kind = "ziplm model folder"
        else:
            kind = "Hugging Face model folder" if Path(source).expanduser().is_dir() else "Hugging Face checkpoint"
        return baseline.model, f"dense baseline = {kind} {source}"
    if member.is_member:
        return dense_architecture(member.model), RANDOM_WEIGHTS_NOTE
    return configured_model(cfg).to(device), f"dense baseline = model={cfg.model.name} ({cfg.model.source})"


def speedups(results: list[ServeResult]) -> list[dict[str, float]]:
    """Speedups of every row over the first (the dense baseline): round-paired and pooled."""
    return [paired_speedups(results[0], r) for r in results]


def results_table(results: list[ServeResult], params: list[int], title: str) -> Table:
    """Compact enough for an 80-column terminal (the mean is in the JSON and markdown files)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1))
    for column in ("model", "params", "p50 ms", "p95 ms", "p99 ms", "req/s", "seq/s", "p50 ×", "thr ×"):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for r, n, s in zip(results, params, speedups(results), strict=True):
        table.add_row(
            r.name,
            f"{n / 1e6:.1f}M",
            f"{r.p50_ms:.1f}",
            f"{r.p95_ms:.1f}",
            f"{r.p99_ms:.1f}",
            f"{r.requests_per_s:.1f}",
            f"{r.sequences_per_s:.1f}",
            f"{s['p50']:.2f}",
            f"{s['throughput']:.2f}",
        )
    return table


def markdown(record: dict[str, Any]) -> str:
    """``serve_bench.md``: the settings, the baseline note, and the results table."""
    settings = record["settings"]
    lines = [
        "# Serving benchmark",
        "",
        f"Checkpoint `{record['checkpoint']}` on {record['device_name']} ({record['threads']} torch threads).",
        f"{settings['concurrency']} concurrent clients, {settings['requests']} requests per model, "
        f"batch {settings['batch_size']} x seq {settings['seq_length']}, {settings['warmup']} warm-up requests, "
        f"{settings['rounds']} interleaved rounds; one worker thread serves the queue.",
        f"{record['baseline']}.",
        f"{SPEEDUP_NOTE}.",
        "",
        "| model | params | p50 ms | p95 ms | p99 ms | mean ms | req/s | seq/s | p50 speedup | throughput speedup |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["results"]:
        lines.append(
            f"| {r['name']} | {r['parameters']:,} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['mean_ms']:.2f} | {r['requests_per_s']:.1f} | {r['sequences_per_s']:.1f} | "
            f"{r['speedup_p50']:.2f}x (pooled {r['speedup_p50_pooled']:.2f}x) | "
            f"{r['speedup_throughput']:.2f}x (pooled {r['speedup_throughput_pooled']:.2f}x) |"
        )
    return "\n".join(lines) + "\n"


def run_serve_bench(cfg: DictConfig) -> dict[str, Any]:
    """Serve the member and its dense baseline under the same load; print and save the figures."""
    settings = serve_settings(cfg)
    sources = checkpoint_sources(cfg.get("checkpoint"), "serve-bench")
    if len(sources) != 1:
        raise ValueError(f"ziplm serve-bench serves one checkpoint at a time; got checkpoint={sources}")
    source, device = sources[0], str(cfg.hardware.device)
    checkpoint = load_for_timing(source, device, "checkpoint")
    baseline, note = load_baseline(cfg.serve.get("baseline"), checkpoint, device, cfg)
    name = Path(source).name or source
    names = ["dense", name if name != "dense" else "member"]
    models = dict(zip(names, (baseline, checkpoint.model), strict=True))
    console = Console()
    console.print(
        f"serve-bench: {settings.concurrency} clients x {settings.requests} requests per model, "
        f"batch {settings.batch_size} x seq {settings.seq_length}; {note}"
    )
    results = serve_benchmark(models, settings)
    threads = settings.threads or torch.get_num_threads()
    params = [count_parameters(m) for m in models.values()]
    rows = [
        {**r.to_dict(), "parameters": n, **{f"speedup_{k}": v for k, v in s.items()}}
        for r, n, s in zip(results, params, speedups(results), strict=True)
    ]
    record = {
        "checkpoint": source,
        "baseline": note,
        "device_name": device_name(device),
        "threads": threads,
        "settings": asdict(settings),
        "results": rows,
    }
    out = run_dir(cfg)
    (out / "serve_bench.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "serve_bench.md").write_text(markdown(record))
    console.print(results_table(results, params, f"serving {names[1]} vs dense ({threads} threads)"))
    console.print(f"{SPEEDUP_NOTE}\n{note}\nwrote {out / 'serve_bench.json'} and {out / 'serve_bench.md'}")
    return record
