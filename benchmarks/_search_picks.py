"""The search half of `speedup_accuracy.py`: per model × batch size, one latency table per variant, the real
search's picks (DP + SPDY, open loop) from each, stitched, and all of them timed with the dense model in the
same interleaved rounds; and the verdict against the bar. (benchmarks/ is no package: the script puts this
folder on sys.path.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ziplm.core.latency import LatencyModel
from ziplm.latency.measure import interleaved_speedups, measure_latency_table

BAR_MEDIAN, BAR_MAX = 0.03, 0.06  # the bar on |measured/target − 1|
VARIANTS: dict[str, int | None] = {"anchors": 0, "fit": None}  # measure_latency_table's `mixed` (None: its default)


class Phases:
    """Seconds per named phase (summed when a name repeats)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


_WARNED: set[str] = set()


def measure_table(model: Any, env: Any, heads: list[int], ffn: list[int], mixed: int | None) -> tuple[Any, bool]:
    """`measure_latency_table`, passing ``mixed=`` only where its signature takes it; (table, whether it did)."""
    kwargs: dict[str, Any] = {}
    if mixed is not None:
        if "mixed" in inspect.signature(measure_latency_table).parameters:
            kwargs["mixed"] = mixed
        elif "mixed" not in _WARNED:
            _WARNED.add("mixed")
            print(
                f"WARNING: measure_latency_table takes no `mixed` keyword yet: variant `anchors` (mixed={mixed}) "
                "is measured like `fit`, with the function's own defaults",
                flush=True,
            )
    return measure_latency_table(model, env, heads, ffn, show_progress=False, **kwargs), bool(kwargs)


def run_batch(
    prep: dict[str, Any], batch: int, variants: list[str], targets: list[float], rounds: int, work: Path
) -> dict[str, Any]:
    """Tables, searches and one interleaved timing of every pick for one model × batch size."""
    from ziplm.eval.evaluate import task_loss
    from ziplm.pipelines.placement import eval_precision
    from ziplm.pruning.search import pick
    from ziplm.pruning.stitch import stitch

    settings, model, database = prep["settings"], prep["model"], prep["database"]
    env = dataclasses.replace(settings.hardware, batch_size=batch, seq_length=128)
    heads, ffn = prep["grids"]
    phases, tables, pruned = Phases(), {}, []
    rows: list[dict[str, Any]] = []
    precision = eval_precision(settings.trainer)

    def score(candidate: torch.nn.Module) -> float:
        return task_loss(candidate, prep["loss"], precision)

    for variant in variants:
        with phases(f"table {variant}"):
            table, passed = measure_table(model, env, heads, ffn, VARIANTS[variant])
        folder = work / "tables"
        folder.mkdir(parents=True, exist_ok=True)
        table.save(folder / f"b{batch}-{variant}.json")
        entry: dict[str, Any] = {
            "mixed": VARIANTS[variant],
            "mixed_passed": passed,
            "base_time_s": table.base_time,
            "self_check": table.metadata.get("self_check"),
            "seconds": phases.seconds[f"table {variant}"],
        }
        tables[variant] = entry
        try:
            latency = LatencyModel(table, prep["layers"])
        except ValueError as err:  # a noise-dominated table: no picks from it
            entry["error"] = str(err)
            rows += [{"variant": variant, "target": t, "error": f"table unusable: {err}"} for t in targets]
            continue
        entry["max_speedup"] = latency.max_speedup
        for target in targets:
            if target >= latency.max_speedup:
                rows.append(
                    {"variant": variant, "target": target, "error": f"unreachable (max {latency.max_speedup:.2f}x)"}
                )
                continue
            with phases("search"):
                scorer = score if prep["loss"] else None
                choice, found = pick(model, database, latency, target, settings.search, settings.seed, scorer)
                pruned.append(stitch(model, database, choice))
            spdy = (
                {k: found[k] for k in ("loss", "baseline_loss")} | {"candidates": len(found["log"])} if found else None
            )
            rows.append(
                {
                    "variant": variant,
                    "target": target,
                    "predicted": latency.speedup(choice),
                    "heads": [h for h, _ in choice],
                    "ffn": [m for _, m in choice],
                    "spdy": spdy,
                }
            )
    with phases("timing"):
        measured = interleaved_speedups(model, pruned, env, rounds) if pruned else []
    for row, speedup in zip([r for r in rows if "error" not in r], measured, strict=True):
        row["measured"] = speedup
        row["dev_target"] = speedup / row["target"] - 1
        row["dev_predicted"] = speedup / row["predicted"] - 1
    return {
        "batch": batch,
        "environment": dataclasses.asdict(env),
        "rounds": rounds,
        "tables": tables,
        "rows": rows,
        "summary": summarise(rows, variants),
        "phases": phases.seconds,
    }


def summarise(rows: list[dict[str, Any]], variants: list[str]) -> dict[str, Any]:
    """Per variant: median and max |measured/target − 1| over its timed picks, and the verdict on the bar."""
    out = {}
    for variant in variants:
        devs = [abs(r["dev_target"]) for r in rows if r["variant"] == variant and "dev_target" in r]
        missing = sum(1 for r in rows if r["variant"] == variant and "dev_target" not in r)
        if not devs:
            out[variant] = {"picks": 0, "missing": missing, "verdict": "FAIL (no pick timed)"}
            continue
        median, worst = statistics.median(devs), max(devs)
        ok = median <= BAR_MEDIAN and worst <= BAR_MAX and not missing
        verdict = "PASS" if ok else "FAIL" + (f" ({missing} target(s) without a pick)" if missing else "")
        out[variant] = {"picks": len(devs), "missing": missing, "median": median, "max": worst, "verdict": verdict}
    return out
