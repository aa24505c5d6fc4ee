"""Predicted vs measured speedup of the additive latency model on this machine (and, with --loop, of the search
closed on measured speedups, as `ziplm run` does).

For each model × batch size: measure the latency table, let the DP pick per-layer sizes for each
target (with random per-layer sensitivities so shapes are uneven), shrink the model physically, then
time dense and pruned models interleaved (dense, p1, p2, …, dense, p1, …) so drift cancels.

With several ``--fits`` the one table's anchors are drawn each way (``lines``: straight lines between
anchors, the table's own; ``quadratic``: a least-squares curve through them), each fit's DP picks
its own structures, and all of them are timed in the same interleaved rounds: an A/B of the fits that
includes the search's habit of picking the levels a table prices lowest.

With ``--loop`` every fit also gets ``<fit>+loop`` picks: the pick built and timed, the search
target corrected while it misses by more than the pipeline's default tolerance (3%, at most twice). All picks,
open and closed loop, are then timed afresh in the same rounds.

    python benchmarks/speedup_accuracy.py                      # MiniLM + BERT-base, batch 1 and 32
    python benchmarks/speedup_accuracy.py --models minilm --batches 32 --fits quadratic lines
    python benchmarks/speedup_accuracy.py --models bert-base --batches 32 --loop
    python benchmarks/speedup_accuracy.py --models minilm --batches 1 --rounds 5   # quick
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Any

import torch

from ziplm.core.latency import LatencyModel
from ziplm.core.levels import ffn_levels, head_levels
from ziplm.core.structure import Structure
from ziplm.latency.cache import load_or_measure
from ziplm.latency.measure import FITS, Environment, interleaved_speedups, refit_table
from ziplm.models import ModelSpec, adapter_for, build_model
from ziplm.pruning.settings import SearchSettings
from ziplm.pruning.targets import Choice, SearchSpace, meet_measured_target, search_target

# The pipeline's own defaults (search.speedup_tolerance / speedup_corrections), read, not copied.
LOOP_TOLERANCE, LOOP_CORRECTIONS = SearchSettings.speedup_tolerance, SearchSettings.speedup_corrections
MODELS = {
    "minilm": ModelSpec(name="minilm", family="bert", source="packaged:minilm"),
    "bert-base": ModelSpec(
        name="bert-base",
        family="bert",
        source="scratch",
        hidden_size=768,
        num_layers=12,
        num_heads=12,
        intermediate_size=3072,
        vocab_size=30522,
        max_position_embeddings=512,
    ),
}


def _proxy_errors(dims: Any, heads: list[int], ffn: list[int], seed: int) -> list[dict[str, dict[int, float]]]:
    """Per-level errors shaped like real ones (convex in removed fraction) with per-layer sensitivity."""
    gen = torch.Generator().manual_seed(seed)
    sens = torch.rand(dims.num_layers, 2, generator=gen) + 0.2
    return [
        {
            "attention": {k: float(sens[l, 0]) * (1 - k / dims.num_heads) ** 2 for k in heads},
            "ffn": {m: float(sens[l, 1]) * (1 - m / dims.intermediate_size) ** 2 for m in ffn},
        }
        for l in range(dims.num_layers)
    ]


def run(
    model_name: str,
    batch: int,
    targets: list[float],
    rounds: int,
    cache_dir: str,
    fits: list[str],
    loop: bool = False,
) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    model = build_model(MODELS[model_name], "base").eval()
    adapter = adapter_for(model)
    dims = adapter.dims(model)
    heads, ffn = head_levels(dims.num_heads), ffn_levels(dims.intermediate_size)
    env = Environment(batch_size=batch, seq_length=128, repetitions=20, max_seconds_per_entry=20.0)
    started = time.perf_counter()
    measured_table, _, cached = load_or_measure(model, env, heads, ffn, cache_dir)
    table_seconds = time.perf_counter() - started

    def build(choice: Choice) -> torch.nn.Module:
        pruned = copy.deepcopy(model)
        adapter.apply_structure(
            pruned, Structure.from_kept(dims, [range(h) for h, _ in choice], [range(m) for _, m in choice])
        )
        return pruned

    pruned_models, picks = [], []
    for fit in fits:
        table = refit_table(measured_table, fit)
        latency = LatencyModel(table, dims.num_layers)
        space = SearchSpace.build(_proxy_errors(dims, heads, ffn, seed=batch), table)

        def search_at(
            target: float, space: SearchSpace = space, latency: LatencyModel = latency
        ) -> tuple[Choice, float]:
            choice, _ = search_target(space, latency, target)
            return choice, latency.speedup(choice)

        for target in targets:
            choice, predicted = search_at(target)
            pruned_models.append(build(choice))
            picks.append((fit, target, predicted, latency.max_speedup, 1))
            if loop:  # the pipeline's closed loop: each try built and timed, the search target corrected
                choice, best, attempts = meet_measured_target(
                    target,
                    search_at,
                    lambda c: interleaved_speedups(model, [build(c)], env, rounds)[0],
                    tolerance=LOOP_TOLERANCE,
                    max_corrections=LOOP_CORRECTIONS,
                    max_speedup=latency.max_speedup,
                )
                pruned_models.append(build(choice))
                picks.append((f"{fit}+loop", target, best.predicted, latency.max_speedup, len(attempts)))
    # Every pick timed afresh in the same rounds: the loop's own timings do not score it.
    measured_speedups = interleaved_speedups(model, pruned_models, env, rounds)
    rows = []
    for (fit, target, pred, reach, searches), measured in zip(picks, measured_speedups, strict=True):
        rows.append(
            {
                "model": model_name,
                "batch": batch,
                "fit": fit,
                "target": target,
                "predicted": pred,
                "measured": measured,
                "dev_measured_vs_target": abs(measured / target - 1),
                "signed_dev": measured / target - 1,
                "table_seconds": table_seconds,
                "table_cached": cached,
                "max_speedup": reach,
                "searches": searches,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["minilm", "bert-base"], choices=sorted(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--targets", nargs="+", type=float, default=[1.5, 2.0, 3.0, 4.0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--cache-dir", default="outputs/cache")
    parser.add_argument("--fits", nargs="+", default=["lines"], choices=sorted(FITS))
    parser.add_argument(
        "--loop", action="store_true", help="also close each pick on its measured speedup, as `ziplm run` does"
    )
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, seq 128, fp32 eager CPU")
    header = f"{'model':<10}{'batch':>6}{'fit':>15}{'target':>8}{'predicted':>11}{'measured':>10}{'meas/tgt-1':>12}"
    print(header)
    rows = []
    for name in args.models:
        for batch in args.batches:
            for row in run(name, batch, args.targets, args.rounds, args.cache_dir, args.fits, args.loop):
                rows.append(row)
                print(
                    f"{row['model']:<10}{row['batch']:>6}{row['fit']:>15}{row['target']:>8.2f}{row['predicted']:>11.3f}"
                    f"{row['measured']:>10.3f}{100 * row['signed_dev']:>+11.1f}%"
                    f"   (table {'cached' if row['table_cached'] else str(round(row['table_seconds'])) + 's'},"
                    f" max {row['max_speedup']:.1f}x, {row['searches']} search{'es' if row['searches'] > 1 else ''})",
                    flush=True,
                )
    for fit in dict.fromkeys(r["fit"] for r in rows):
        devs = [r["dev_measured_vs_target"] for r in rows if r["fit"] == fit]
        print(
            f"{fit}: |measured/target - 1| over {len(devs)} runs: median {100 * statistics.median(devs):.2f}%, "
            f"max {100 * max(devs):.2f}%"
        )


if __name__ == "__main__":
    main()
