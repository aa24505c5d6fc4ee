"""Per-layer sizes for a speedup target, from a levels database: DP, SPDY on a score, and (optionally)
closed on measured speedups. Typed arguments only: the caller hands in how a candidate model is scored
(e.g. the task loss on labelled batches) and timed (against the dense model), so this layer needs
neither the evaluation code nor the timing code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from torch import nn

from ziplm.core.database import LevelDatabase
from ziplm.core.latency import LatencyModel, LatencyTable
from ziplm.pruning.stitch import stitch
from ziplm.pruning.targets import (
    Choice,
    SearchSettings,
    SearchSpace,
    meet_measured_target,
    search_target,
    target_status,
)

console = Console()
Score = Callable[[nn.Module], float]  # a stitched candidate -> loss (lower is better)
Measure = Callable[[nn.Module], float]  # a stitched candidate -> measured speedup over the dense model


def search_space(database: LevelDatabase, table: LatencyTable, num_layers: int) -> SearchSpace:
    """The database's per-level errors beside the table's per-level times, for every layer."""
    errors = [{s: database.errors(layer, s) for s in ("attention", "ffn")} for layer in range(num_layers)]
    return SearchSpace.build(errors, table)


def pick(
    model: nn.Module,
    database: LevelDatabase,
    latency: LatencyModel,
    target: float,
    settings: SearchSettings,
    seed: int,
    score: Score | None = None,
) -> tuple[Choice, dict[str, Any] | None]:
    """Per-layer sizes for `target`: the DP's pick, refined by SPDY on `score` of stitched candidates
    (none: the DP's pick as it is). Returns the choice and the SPDY record (None without a score)."""
    space = search_space(database, latency.table, latency.num_layers)
    loss = (lambda choice: score(stitch(model, database, choice))) if score is not None else None
    choice, result = search_target(
        space,
        latency,
        target,
        loss_fn=loss,
        random_starts=int(settings.spdy_random_starts),
        local_steps=int(settings.spdy_local_steps),
        seed=seed,
    )
    return choice, (result.to_dict() if result is not None else None)


def pick_measured(
    model: nn.Module,
    database: LevelDatabase,
    latency: LatencyModel,
    target: float,
    settings: SearchSettings,
    seed: int,
    measure: Measure,
    score: Score | None = None,
    tolerance: float | None = None,
) -> tuple[Choice, dict[str, Any]]:
    """`pick`, closed on the measured speedup: each candidate is stitched and `measure`d; one that misses
    the target by more than ``settings.speedup_tolerance`` is searched again at a corrected target
    (``settings.speedup_corrections`` times at most). Returns the closest candidate and the record fields
    that say how it was found (``search``, ``search_target``, ``attempts``, and ``measured_speedup`` /
    ``target_status`` / ``kept_attempt`` (its index among the `measure` calls) of the kept candidate).
    `tolerance`: None = ``settings.speedup_tolerance``; a run passes one raised above its timing noise."""
    tolerance = float(settings.speedup_tolerance) if tolerance is None else float(tolerance)

    def search_at(at: float) -> tuple[tuple[Choice, dict[str, Any] | None], float]:
        found = pick(model, database, latency, at, settings, seed, score)
        return found, latency.speedup(found[0])

    (choice, search), picked, attempts = meet_measured_target(
        target,
        search_at,
        lambda candidate: measure(stitch(model, database, candidate[0])),
        tolerance=tolerance,
        max_corrections=int(settings.speedup_corrections),
        max_speedup=latency.max_speedup,
    )
    if len(attempts) > 1:
        tried = ", ".join(f"{a.search_target:.2f}× → measured {a.measured:.2f}×" for a in attempts)
        console.print(f"member {target:g}x: search target corrected from measurement: {tried}")
    return choice, {
        "search": search,
        "search_target": picked.search_target,
        "attempts": [a.to_dict() for a in attempts],
        "measured_speedup": picked.measured,  # timed once: the member is this candidate
        "kept_attempt": attempts.index(picked),  # position among the `measure` calls, in order
        "target_status": target_status(picked.measured, target, tolerance),
        "tolerance": tolerance,
    }
