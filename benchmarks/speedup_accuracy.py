"""Predicted vs measured speedup of what users get: the picks of the real search, timed on this machine.

For each model × batch size, as ``ziplm run`` makes a one-shot family, open loop:
1. data: BBC News (the packaged offline corpus of task ``bbc-news``), tokenized with the model's tokenizer;
2. model: ``minilm`` = the fine-tuned MiniLM teacher of the main job (reused from ``<cache-dir>/teachers``,
   fine-tuned and cached there if missing); ``bert-base`` = the BERT-base config with random weights and
   a random 5-class head (BBC News through the packaged MiniLM tokenizer, same vocabulary; SPDY then
   scores the task loss of that random head);
3. the OBS levels database on the pipeline's calibration batches, kept in ``<work-dir>/<model>/database``
   (resumable: a rerun reuses it);
4. one latency table per variant in the ``cpu`` hardware profile (batch overridden, seq 128):
   ``anchors`` = ``measure_latency_table(..., mixed=0)``, ``fit`` = its default ``mixed``;
5. per variant and target the real search (DP + SPDY on the task loss of the pipeline's labelled batches,
   ``ziplm.pruning.search.pick``; no measured-speedup corrections), each pick stitched;
6. every pick of every variant timed with the dense model in the same interleaved rounds.
Printed and written to ``--out`` (JSON): predicted vs measured speedup per pick, the pick's shape, per
variant median/max |measured/target − 1| against the bar (median ≤ 3%, max ≤ 6%), phase times.

    python benchmarks/speedup_accuracy.py                       # MiniLM + BERT-base, batch 32 and 1 (long)
    python benchmarks/speedup_accuracy.py --models minilm --batches 32 --targets 2 --rounds 3   # quick
    python benchmarks/speedup_accuracy.py --models bert-base --batches 1 --variants fit
    python benchmarks/speedup_accuracy.py --models minilm search.spdy_random_starts=4   # + Hydra overrides
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ziplm.latency.measure import device_name, measure_latency_table

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is no package: its helper lies beside
from _search_picks import BAR_MAX, BAR_MEDIAN, VARIANTS, Phases, run_batch, summarise

# Per model: Hydra overrides on top of the main job's config (model minilm, task bbc-news, hardware cpu).
MODELS: dict[str, list[str]] = {
    "minilm": [],
    "bert-base": ["model=bert-base", "model.source=scratch", "model.tokenizer=packaged:minilm"],
}
# --tiny: the wiring in about a minute (random tiny-bert, few samples, short timings); not a measurement.
TINY = [
    "model=tiny-bert",
    "pruner.calibration_samples=16",
    "search.spdy_loss_samples=8",
    "search.spdy_random_starts=2",
    "search.spdy_local_steps=2",
    "hardware.warmup=1",
    "hardware.repetitions=3",
    "hardware.max_seconds_per_entry=1.0",
]
RANDOM_HEAD_NOTE = "random weights and head: SPDY scored on the task loss of the random head (no trained head)"


def _proxy_errors(dims: Any, heads: list[int], ffn: list[int], seed: int) -> list[dict[str, dict[int, float]]]:
    """Per-level errors shaped like real ones (convex in removed fraction) with per-layer sensitivity.

    Not used here any more (the picks come from a real database); `device_check.py` loads it from this file.
    """
    gen = torch.Generator().manual_seed(seed)
    sens = torch.rand(dims.num_layers, 2, generator=gen) + 0.2
    return [
        {
            "attention": {k: float(sens[l, 0]) * (1 - k / dims.num_heads) ** 2 for k in heads},
            "ffn": {m: float(sens[l, 1]) * (1 - m / dims.intermediate_size) ** 2 for m in ffn},
        }
        for l in range(dims.num_layers)
    ]


def restart_under_tuned_allocator() -> None:
    """Re-execute under the allocator `ziplm run` times with (its tuned glibc malloc), as the CLI does;
    a user's own choice (GLIBC_TUNABLES, a preloaded malloc, ZIPLM_ALLOCATOR=system) is kept."""
    try:
        from ziplm.latency.allocator import reexec_args_for_allocator
    except ImportError:  # a ziplm without an allocator choice: time as started
        return
    env = reexec_args_for_allocator(["run", *sys.argv[1:]], os.environ)
    if env is not None:
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def runtime_info() -> dict[str, Any]:
    """What the timings depend on besides the model: torch, threads, allocator settings, CPU."""
    try:
        from ziplm.latency.allocator import current_allocator

        allocator = current_allocator()
    except ImportError:
        allocator = "unknown"
    return {
        "torch": torch.__version__,
        "allocator": allocator,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
        "LD_PRELOAD": os.environ.get("LD_PRELOAD"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "cpu": device_name("cpu"),
        "mixed_keyword": "mixed" in inspect.signature(measure_latency_table).parameters,
        "python": sys.version.split()[0],
    }


def prepare(name: str, overrides: list[str], cache_dir: str, work: Path, phases: Phases) -> dict[str, Any]:
    """Settings, data, dense model, calibration and loss batches, and the levels database of one model."""
    from lightning.fabric.utilities.seed import seed_everything

    from ziplm.config.paths import compose
    from ziplm.config.settings import RunSettings
    from ziplm.data.builtin import train_texts
    from ziplm.data.calibration import calibration_batches
    from ziplm.data.task_data import TaskData
    from ziplm.models import adapter_for, build_model, build_tokenizer
    from ziplm.pipelines.common import head_for
    from ziplm.pipelines.latency import level_grids
    from ziplm.pipelines.ranks import build_database_on_ranks
    from ziplm.pipelines.teacher import head_kwargs, load_or_train_teacher
    from ziplm.pruning.methods import method

    cfg = compose(["logger=none", "hardware=cpu", f"cache_dir={cache_dir}", *overrides], command="bench")
    settings = RunSettings.from_config(cfg)
    seed_everything(settings.seed, workers=True, verbose=False)  # as the pipeline: the same random heads
    task, notes = settings.task, []
    with phases("data + model"):
        tokenizer = build_tokenizer(settings.model, cache_dir=settings.cache_dir, corpus=train_texts)
        data = TaskData.load(task, tokenizer, settings.seed)
        if settings.model.source == "scratch":  # no teacher to fine-tune: the random model as it is
            model = build_model(settings.model, head_for(task.name, task.kind), **head_kwargs(task)).eval()
            notes.append(RANDOM_HEAD_NOTE)
        else:
            model, cached = load_or_train_teacher(settings, data, work, torch.device("cpu"))
            notes.append(f"fine-tuned teacher {'reused from' if cached else 'trained into'} {cache_dir}/teachers")
    dims = adapter_for(model).dims(model)
    samples, seed = settings.search.spdy_loss_samples, settings.seed
    labelled = method(settings.pruner.method).labelled
    calibration = calibration_batches(data.train_features, settings.pruner.calibration_samples, 32, seed, labelled)
    loss = calibration_batches(data.train_features, samples, 32, seed + 1, True) if samples > 0 else []
    rows = sum(len(b["input_ids"]) for b in loss)
    notes.append(
        f"open loop; SPDY score: task loss on {rows} labelled training rows (seed {seed + 1}, as the pipeline)"
    )
    with phases("database"):
        database = build_database_on_ranks(model, calibration, work / "database", settings.database, settings.trainer)
    heads, ffn = level_grids(cfg, dims.num_heads, dims.intermediate_size)
    print(f"{name}: {settings.model.name} on {task.name}; {'; '.join(notes)}; database {work / 'database'}")
    return {
        "settings": settings,
        "model": model,
        "database": database,
        "loss": loss,
        "grids": (heads, ffn),
        "layers": dims.num_layers,
        "notes": notes,
        "calibration_samples": sum(len(b["input_ids"]) for b in calibration),
    }


def _layers(values: list[int]) -> str:
    return "/".join(str(v) for v in values)


def print_run(model: str, run: dict[str, Any], notes: list[str]) -> None:
    env = run["environment"]
    print(
        f"\n== {model}, batch {run['batch']} × seq {env['seq_length']} ({env['device']} {env['dtype']}), "
        f"{run['rounds']} interleaved rounds =="
    )
    for note in notes:
        print(f"   note: {note}")
    for variant, t in run["tables"].items():
        reach = f"max {t['max_speedup']:.2f}x" if "max_speedup" in t else f"UNUSABLE: {t.get('error')}"
        mixed = (
            "mixed=default"
            if t["mixed"] is None
            else f"mixed={t['mixed']}"
            + ("" if t["mixed_passed"] or t["mixed"] is None else " (not supported: not passed)")
        )
        print(f"   table {variant:<8} {mixed}: T_base {1e3 * t['base_time_s']:.2f} ms, {reach}, {t['seconds']:.0f} s")
    print(
        f"{'variant':<9}{'target':>7}{'pred':>7}{'meas':>7}{'meas/tgt-1':>11}{'meas/pred-1':>12}  heads | ffn per layer"
    )
    for r in run["rows"]:
        if "error" in r:
            print(f"{r['variant']:<9}{r['target']:>7.2f}   -- {r['error']}")
            continue
        print(
            f"{r['variant']:<9}{r['target']:>7.2f}{r['predicted']:>7.2f}{r['measured']:>7.2f}"
            f"{100 * r['dev_target']:>+10.1f}%{100 * r['dev_predicted']:>+11.1f}%  "
            f"{_layers(r['heads'])} | {_layers(r['ffn'])}"
        )
    print_summary(run["summary"])
    print("   phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in run["phases"].items()), flush=True)


def print_summary(summary: dict[str, Any], label: str = "") -> None:
    for variant, s in summary.items():
        if not s["picks"]:
            print(f"   {label}{variant}: {s['verdict']}")
            continue
        print(
            f"   {label}{variant}: |measured/target - 1| over {s['picks']} pick(s): median {100 * s['median']:.2f}%, "
            f"max {100 * s['max']:.2f}% -> {s['verdict']} "
            f"(bar: median <= {100 * BAR_MEDIAN:g}%, max <= {100 * BAR_MAX:g}%)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["minilm", "bert-base"], choices=sorted(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[32, 1])
    parser.add_argument("--targets", nargs="+", type=float, default=None, help="default 1.5 2 3 4")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds of all picks together")
    parser.add_argument("--cache-dir", default="outputs/cache", help="where `ziplm run` caches fine-tuned teachers")
    parser.add_argument(
        "--work-dir", default="outputs/bench/speedup_accuracy", help="databases and tables: <dir>/<model>"
    )
    parser.add_argument("--out", default="outputs/bench/speedup_accuracy.json")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke: tiny-bert, target 1.5
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every model (e.g. search.spdy_local_steps=5)")
    args = parser.parse_args()
    restart_under_tuned_allocator()
    targets = args.targets or ([1.5] if args.tiny else [1.5, 2.0, 3.0, 4.0])
    models = {"tiny-bert": TINY} if args.tiny else {m: MODELS[m] for m in args.models}
    import datasets

    datasets.disable_progress_bars()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    info = runtime_info()
    print(
        f"torch {info['torch']}, threads {info['threads']} (interop {info['interop_threads']}), "
        f"allocator {info['allocator']}, GLIBC_TUNABLES={info['GLIBC_TUNABLES']!r}, "
        f"LD_PRELOAD={info['LD_PRELOAD']!r}, cpu {info['cpu']}; "
        f"measure_latency_table takes `mixed`: {info['mixed_keyword']}"
    )
    report: dict[str, Any] = {
        "info": info,
        "argv": sys.argv[1:],
        "targets": targets,
        "bar": {"median": BAR_MEDIAN, "max": BAR_MAX},
        "models": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for name, overrides in models.items():
        work, phases = Path(args.work_dir) / name, Phases()
        prep = prepare(name, [*overrides, *args.overrides], args.cache_dir, work, phases)
        entry = report["models"][name] = {
            "notes": prep["notes"],
            "calibration_samples": prep["calibration_samples"],
            "loss_samples": sum(len(b["input_ids"]) for b in prep["loss"]),
            "phases": phases.seconds,
            "runs": [],
        }
        for batch in args.batches:
            run = run_batch(prep, batch, args.variants, targets, args.rounds, work)
            entry["runs"].append(run)
            print_run(name, run, prep["notes"])
            out.write_text(json.dumps(report, indent=2) + "\n")  # after every run: a stopped benchmark keeps it
        print(f"   {name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.seconds.items()))
    rows = [r for m in report["models"].values() for run in m["runs"] for r in run["rows"]]
    report["summary"] = summarise(rows, args.variants)
    report["seconds"] = time.perf_counter() - started
    print(f"\nall models × batches ({report['seconds']:.0f} s):")
    print_summary(report["summary"])
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
