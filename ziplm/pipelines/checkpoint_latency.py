"""``ziplm latency checkpoint=<src>`` (or ``checkpoint=[a,b,…]``): time any checkpoints — family members,
plain HF folders, Hub ids (DistilBERT, TinyBERT, a CoFi export, …) — against the configured dense model.

All models are timed interleaved in the same rounds in the hardware profile's environment (engine,
dtype, batch × sequence length, threads), so their speedups compare with each other and with the
members' measured speedups of a ``ziplm run`` in the same profile; quoted speedups were timed elsewhere.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from torch import nn

from ziplm.commands import INVOCATION
from ziplm.deploy.serving import check_positions
from ziplm.latency.measure import device_name, interleaved_samples, relative_to_first
from ziplm.models import count_parameters
from ziplm.models.checkpoint import load_for_timing
from ziplm.models.io import count_encoder_parameters
from ziplm.pipelines.common import checkpoint_sources, configured_model, environment
from ziplm.pipelines.outputs import run_dir
from ziplm.report.provenance import write_provenance

RECORD = "latency_compare.json"
DEFAULT_ROUNDS = 15  # as search.speedup_rounds: interleaved rounds per comparison


def _encoder_parameters(model: nn.Module) -> int | None:
    try:
        return count_encoder_parameters(model)
    except (KeyError, ValueError, TypeError):  # an architecture ziplm has no adapter for
        return None


def _label(source: str) -> str:
    path = Path(source)
    return f"{path.parent.name}/{path.name}" if path.name.endswith("x") and path.parent.name == "family" else path.name


def time_checkpoints(cfg: DictConfig) -> dict[str, Any]:
    """Load, check and time every checkpoint against the configured model; the JSON record."""
    sources = checkpoint_sources(cfg.get("checkpoint"), "latency")
    env = environment(cfg)
    env.validate()
    rounds = int(cfg.search.get("speedup_rounds") or DEFAULT_ROUNDS)
    loaded = [load_for_timing(source, "cpu", "checkpoint") for source in sources]  # timing copies move/cast
    dense = configured_model(cfg)
    models = [dense, *(c.model for c in loaded)]
    names = [f"dense {cfg.model.name}", *(_label(s) for s in sources)]
    for name, model in zip(names, models, strict=True):
        check_positions(name, model, env.seq_length, "hardware.seq_length")
    samples = interleaved_samples(models, env, rounds)
    relative = relative_to_first(samples)
    base = statistics.median(samples[0])
    rows = []
    for index, (name, model, rel) in enumerate(zip(names, models, relative, strict=True)):
        checkpoint = loaded[index - 1] if index else None
        rows.append(
            {
                "model": name,
                "source": checkpoint.source if checkpoint else str(cfg.model.source),
                "kind": "dense" if checkpoint is None else "ziplm member" if checkpoint.is_member else "plain",
                "parameters": count_parameters(model),
                "encoder_parameters": _encoder_parameters(model),
                "ms": 1e3 * base * rel,
                "speedup": 1.0 / rel,
                "rounds": len(samples[index]),
            }
        )
    return {
        "environment": {"hardware": str(cfg.hardware.name), **asdict(env), "device_name": device_name(env.device)},
        "rows": rows,
    }


def markdown(record: dict[str, Any]) -> str:
    env = record["environment"]
    lines = [
        "# Checkpoints timed side by side",
        "",
        f"Environment `{env['hardware']}`: {env['engine']} {env['dtype']} on {env['device_name']}, "
        f"batch {env['batch_size']} x seq {env['seq_length']}; every model timed interleaved in the same rounds; "
        "speedup = median over rounds of the dense model's time / the model's time.",
        "",
        "| model | kind | params (M) | encoder params (M) | ms per batch | speedup | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        encoder = f"{r['encoder_parameters'] / 1e6:.2f}" if r["encoder_parameters"] is not None else "—"
        lines.append(
            f"| {r['model']} | {r['kind']} | {r['parameters'] / 1e6:.2f} | {encoder} | {r['ms']:.2f} | "
            f"{r['speedup']:.2f}× | `{r['source']}` |"
        )
    return "\n".join(lines) + "\n"


def run_checkpoint_latency(cfg: DictConfig) -> dict[str, Any]:
    """Time the checkpoints, print the table, write ``latency_compare.{json,md}`` and provenance."""
    record = time_checkpoints(cfg)
    out = run_dir(cfg)
    record["provenance"] = write_provenance(out, INVOCATION or ["latency", "(from Python)"])
    (out / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    (out / "latency_compare.md").write_text(markdown(record))
    env = record["environment"]
    table = Table(title=f"{env['hardware']}: batch {env['batch_size']} x seq {env['seq_length']}, {env['dtype']}")
    for column in ("model", "kind", "params", "ms/batch", "speedup"):
        table.add_column(column, justify="left" if column in ("model", "kind") else "right")
    for r in record["rows"]:
        table.add_row(r["model"], r["kind"], f"{r['parameters'] / 1e6:.1f}M", f"{r['ms']:.2f}", f"{r['speedup']:.2f}×")
    console = Console()
    console.print(table)
    console.print(f"wrote {out / RECORD} and {out / 'latency_compare.md'}")
    return record
