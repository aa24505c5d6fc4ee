"""``ziplm latency model=… hardware=…``: measure (or reuse) the latency table of an inference environment;
with ``checkpoint=<src>`` (or a list), time those checkpoints against the configured model instead."""

from __future__ import annotations

import shutil

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from ziplm.core.latency import LatencyModel, LatencyTable
from ziplm.models import adapter_for
from ziplm.pipelines.common import configured_model, environment, to_dict
from ziplm.pipelines.outputs import run_dir
from ziplm.pruning.levels_database import DatabaseSettings, PrunerSettings


def level_grids(cfg: DictConfig, dims_heads: int, dims_ffn: int) -> tuple[list[int], list[int]]:
    """Head and FFN level grids of the run's ``pruner`` group: the database's own (`DatabaseSettings.level_grids`)."""
    pruner = PrunerSettings(**to_dict(cfg.pruner))
    return DatabaseSettings.from_pruner(pruner).level_grids(dims_heads, dims_ffn)


def summary_table(table: LatencyTable, num_layers: int, title: str) -> Table:
    """Rich table: per-level times and the speedup ceiling of the additive model."""
    model = LatencyModel(table, num_layers)
    out = Table(title=f"{title} — T_base {1e3 * table.base_time:.2f} ms, max speedup {model.max_speedup:.2f}×")
    out.add_column("sublayer")
    out.add_column("kept")
    out.add_column("ms (one layer)", justify="right")
    for name, times in (("attention", table.attention), ("ffn", table.ffn)):
        levels = sorted(times, reverse=True)
        shown = levels if len(levels) <= 14 else levels[:6] + levels[-6:]
        for keep in shown:
            out.add_row(name, str(keep), f"{1e3 * times[keep]:.3f}")
    return out


def print_self_check(console: Console, table: LatencyTable) -> None:
    """The table's own test: uneven structures timed with the anchors, predicted vs measured."""
    for check in table.metadata.get("self_check", []):
        predicted, measured = check["predicted_speedup"], check["measured_speedup"]
        console.print(
            f"latency self-check, uneven structure: predicted {predicted:.2f}×, measured {measured:.2f}× "
            f"({100 * (measured / predicted - 1):+.1f}%)"
        )


def run_latency(cfg: DictConfig) -> None:
    """Measure the table for the configured model × hardware (or reuse the cached one) and save it."""
    from ziplm.latency.cache import load_or_measure

    if cfg.get("checkpoint") is not None:  # time checkpoints (members, HF folders, Hub ids) against `model`
        from ziplm.pipelines.checkpoint_latency import run_checkpoint_latency

        run_checkpoint_latency(cfg)
        return
    console = Console()
    out = run_dir(cfg)
    model = configured_model(cfg)
    dims = adapter_for(model).dims(model)
    heads, ffn = level_grids(cfg, dims.num_heads, dims.intermediate_size)
    table, path, cached = load_or_measure(model, environment(cfg), heads, ffn, cfg.cache_dir)
    shutil.copyfile(path, out / "latency_table.json")
    console.print(summary_table(table, dims.num_layers, f"{cfg.model.name} on {cfg.hardware.name}"))
    print_self_check(console, table)
    console.print(f"{'reused cached' if cached else 'measured'} table {path}; copy in {out / 'latency_table.json'}")
