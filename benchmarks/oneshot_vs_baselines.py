"""ZipLM one-shot vs magnitude and random structured pruning on MiniLM + BBC News, no fine-tuning.

Every method shares the teacher, calibration data, level grids, relative-error definition, latency
table and DP search; only the structure selection differs (OBS with weight updates vs the smallest
output-projection norms vs a random order, both without updates). Each member is evaluated and its
end-to-end speedup measured against the dense model, interleaved.

    python benchmarks/oneshot_vs_baselines.py                   # reuses the main job's cached teacher/table
    python benchmarks/oneshot_vs_baselines.py --targets 1.5 2 3 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from run_setup import settings_data_teacher

from ziplm.config.paths import compose
from ziplm.core.latency import LatencyModel
from ziplm.data.calibration import calibration_batches
from ziplm.latency.cache import load_or_measure
from ziplm.latency.measure import interleaved_speedups
from ziplm.lit.phases import evaluate
from ziplm.models import adapter_for
from ziplm.pipelines.latency import level_grids
from ziplm.pruning.database_builder import DatabaseSettings, build_database
from ziplm.pruning.search import search_space
from ziplm.pruning.stitch import stitch
from ziplm.pruning.targets import search_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", type=float, default=[1.5, 2.0, 3.0])
    parser.add_argument("--methods", nargs="+", default=["obs", "magnitude", "random"])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (default: the main job's config)")
    args = parser.parse_args()
    cfg = compose(["logger=none", *args.overrides], command="bench")
    settings, data, teacher, cached, _ = settings_data_teacher(cfg)
    env = settings.hardware
    dims = adapter_for(teacher).dims(teacher)
    heads, ffn = level_grids(cfg, dims.num_heads, dims.intermediate_size)
    table, _, _ = load_or_measure(teacher, env, heads, ffn, cfg.cache_dir)
    latency = LatencyModel(table, dims.num_layers)
    calib = calibration_batches(data.train_features, int(settings.pruner.calibration_samples), 32, int(cfg.seed))
    metric = "accuracy"

    def score(model: object) -> float:
        scores = evaluate(
            model, data.task, data.eval_examples, data.eval_features, settings.trainer, 64, show_progress=False
        )
        return scores[metric]

    dense = score(teacher)
    print(f"{settings.model.name} on {settings.task.name} ({'cached' if cached else 'new'} teacher), {env.device} "
          f"batch {env.batch_size} x seq {env.seq_length}; dense {metric} {dense:.2f}")  # fmt: skip
    print(f"{'method':<10}{'target':>8}{'predicted':>11}{'measured':>10}{metric:>10}{'Δ dense':>9}{'seconds':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            started = time.perf_counter()
            settings = DatabaseSettings(damp=float(settings.pruner.damp), method=method)
            db = build_database(teacher, calib, Path(tmp) / method, settings, show_progress=False)
            space = search_space(db, table, dims.num_layers)
            for target in args.targets:
                choice, _ = search_target(space, latency, target)
                pruned = stitch(teacher, db, choice)
                acc = score(pruned)
                measured = interleaved_speedups(teacher, [pruned], env, args.rounds)[0]
                print(
                    f"{method:<10}{target:>8.2f}{latency.speedup(choice):>11.2f}{measured:>10.2f}{acc:>10.2f}"
                    f"{acc - dense:>+9.2f}{time.perf_counter() - started:>9.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
