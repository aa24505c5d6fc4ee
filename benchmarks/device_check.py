"""The GPU check, prepared as one command: what a GPU user runs, measured on a lent GPU in under 10 minutes.

    python benchmarks/device_check.py --out DIR            # on a CUDA machine (fp16 tables, 16-mixed training)
    python benchmarks/device_check.py --out DIR --cpu-dry-run   # the same sections at tiny scale on a CPU

Sections (each timed; a failing section is recorded with its error and the next one still runs; the JSON
is rewritten after every section, so a run stopped at its time limit keeps what it finished):
1. ``tables``: latency tables of the BERT-base config (random weights) at batch 128 × seq 128 and batch 1,
   fp16 — base time, table build time, self-check (predicted vs measured speedup of uneven structures).
2. ``open_loop``: per table, the DP's picks for targets 2/4/8/15× on *proxy* per-level errors (shaped like
   real ones: a BERT-base database would not fit the 10 minutes), predicted vs measured speedup timed
   interleaved; no correction loop. The real search's picks are timed by section 3 (measured speedups of
   the family) and, on CPUs, by `speedup_accuracy.py`.
3. ``oneshot_family``: ``ziplm run`` on the packaged MiniLM + BBC News, fp16 timing on the GPU, one-shot
   1.5/2/3× (the real CLI in a subprocess): accuracies, predicted/measured speedups, phase times.
4. ``gradual_16_mixed``: one gradual stage of the tiny smoke model trained with ``trainer.precision=16-mixed``
   on the GPU: the path that broke when timing converted the teacher to fp16.

The dry run keeps every section and swaps the scale: a tiny BERT in bf16 on the CPU, the smoke model
instead of MiniLM, ``bf16-mixed`` instead of ``16-mixed`` (CPUs have no fp16 autocast training).
Output: ``DIR/device_check.json`` and the run folders under ``DIR/runs``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ziplm.core.latency import LatencyModel, LatencyTable  # noqa: E402
from ziplm.core.levels import ffn_levels, head_levels  # noqa: E402
from ziplm.core.structure import Structure  # noqa: E402
from ziplm.latency.measure import Environment, interleaved_speedups, measure_latency_table  # noqa: E402
from ziplm.models import ModelSpec, adapter_for, build_model  # noqa: E402
from ziplm.pruning.targets import SearchSpace, search_target  # noqa: E402

TARGETS = [2.0, 4.0, 8.0, 15.0]
BERT_BASE = ModelSpec(name="bert-base", family="bert", source="scratch", hidden_size=768, num_layers=12,
                      num_heads=12, intermediate_size=3072, vocab_size=30522, max_position_embeddings=512)  # fmt: skip
TINY = ModelSpec(name="tiny-bert", family="bert", source="scratch", hidden_size=128, num_layers=3, num_heads=4,
                 intermediate_size=512, vocab_size=1000, max_position_embeddings=128)  # fmt: skip
# The dry run's pipeline timing: few rounds (the numbers are not the point on a CPU, the code paths are).
QUICK_TIMING = [
    "hardware.warmup=1",
    "hardware.repetitions=3",
    "hardware.max_seconds_per_entry=1.0",
    "search.speedup_rounds=3",
    "search.speedup_corrections=0",
    "pruner.calibration_samples=32",
]


def _proxy_errors() -> Callable[..., list[dict[str, dict[int, float]]]]:
    """`speedup_accuracy.py`'s per-level errors (loaded from the file: benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("speedup_accuracy", REPO / "benchmarks" / "speedup_accuracy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._proxy_errors  # type: ignore[no-any-return]


def _plan(dry: bool) -> dict[str, Any]:
    if dry:
        env = {"device": "cpu", "dtype": "bfloat16", "seq_length": 64, "warmup": 1, "repetitions": 3}
        return {"model": TINY, "batches": [16, 4], "env": env, "rounds": 3, "profile": "hardware=cpu-bf16",
                "trainer": ["trainer=cpu", "trainer.precision=bf16-mixed", *QUICK_TIMING],
                "family": ["experiment=smoke"], "half_training": "bf16-mixed"}  # fmt: skip
    env = {"device": "cuda", "dtype": "float16", "seq_length": 128, "warmup": 10, "repetitions": 20}
    family = ["model=minilm", "task=bbc-news", "search.targets=[1.5,2.0,3.0]", "teacher.epochs=1"]
    return {"model": BERT_BASE, "batches": [128, 1], "env": env, "rounds": 15, "profile": "hardware=a100",
            "trainer": ["trainer=gpu"], "family": family, "half_training": "16-mixed"}  # fmt: skip


def tables(plan: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model(plan["model"], "base").eval()
    dims = adapter_for(model).dims(model)
    heads, ffn = head_levels(dims.num_heads), ffn_levels(dims.intermediate_size)
    result = {}
    for batch in plan["batches"]:
        env = Environment(batch_size=batch, max_seconds_per_entry=10.0, **plan["env"])
        started = time.perf_counter()
        try:
            table = measure_latency_table(model, env, heads, ffn, show_progress=False)
            latency = LatencyModel(table, dims.num_layers)  # refuses an inconsistent (noise-dominated) table
        except ValueError as err:  # one environment's table failing still leaves the other's figures
            result[f"batch{batch}"] = {"error": str(err), "seconds": time.perf_counter() - started}
            continue
        state["model"], state["levels"] = model, (heads, ffn)
        state.setdefault("table_objects", {})[batch] = table
        result[f"batch{batch}"] = {
            "seconds": time.perf_counter() - started,
            "base_time_s": table.base_time,
            "max_speedup": latency.max_speedup,
            "self_check": table.metadata.get("self_check"),
            "environment": {k: v for k, v in table.environment.items() if k not in ("dims", "head_levels")},
        }
    if "table_objects" not in state:
        raise RuntimeError(f"no latency table could be measured: {result}")
    return result


def open_loop(plan: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    if "table_objects" not in state:
        raise RuntimeError("skipped: the tables section measured no table")
    model, (heads, ffn) = state["model"], state["levels"]
    adapter = adapter_for(model)
    dims = adapter.dims(model)
    errors = _proxy_errors()(dims, heads, ffn, seed=0)
    result = {}
    for batch, table in state["table_objects"].items():
        assert isinstance(table, LatencyTable)
        latency = LatencyModel(table, dims.num_layers)
        space = SearchSpace.build(errors, table)
        picks, rows = [], []
        for target in TARGETS:
            if target >= latency.max_speedup:
                rows.append({"target": target, "skipped": f"above the table's maximum {latency.max_speedup:.2f}x"})
                continue
            choice, _ = search_target(space, latency, target)
            pruned = copy.deepcopy(model)
            kept = Structure.from_kept(dims, [range(h) for h, _ in choice], [range(m) for _, m in choice])
            adapter.apply_structure(pruned, kept)
            picks.append(pruned)
            rows.append({"target": target, "predicted": latency.speedup(choice), "choice": [list(c) for c in choice]})
        env = Environment(batch_size=batch, max_seconds_per_entry=10.0, **plan["env"])
        measured = iter(interleaved_speedups(model, picks, env, plan["rounds"]) if picks else [])
        for row in rows:
            if "predicted" in row:
                row["measured"] = next(measured)
                row["deviation"] = row["measured"] / row["target"] - 1
        result[f"batch{batch}"] = rows
    return result


def _ziplm(args: list[str], out: Path, name: str) -> dict[str, Any]:
    """`python -m ziplm run ARGS` in a subprocess; returns exit code, wall time and the run's records."""
    folder = out / "runs" / name
    command = [sys.executable, "-m", "ziplm", "run", *args, "logger=csv", f"hydra.run.dir={folder}",
               f"output_root={out / 'runs'}", f"cache_dir={out / 'runs' / 'cache'}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
    record: dict[str, Any] = {"command": " ".join(command[2:]), "exit_code": done.returncode,
                              "seconds": time.perf_counter() - started}  # fmt: skip
    if done.returncode != 0:
        record["stderr_tail"] = done.stderr[-3000:]
        raise RuntimeError(f"ziplm exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    dense = folder / "dense_metrics.json"
    record["dense"] = json.loads(dense.read_text()) if dense.is_file() else None
    record["members"] = [json.loads(p.read_text()) for p in sorted(folder.glob("family/*/metrics.json"))]
    for member in record["members"]:
        member.pop("search", None)  # the SPDY log: long, and in the run folder
    phases = folder / "phases.json"
    record["phases"] = json.loads(phases.read_text()) if phases.is_file() else None
    return record


def oneshot_family(plan: dict[str, Any], out: Path) -> dict[str, Any]:
    return _ziplm([*plan["family"], plan["profile"], *plan["trainer"]], out, "oneshot")


def gradual_half(plan: dict[str, Any], out: Path) -> dict[str, Any]:
    args = ["experiment=smoke", "schedule=gradual", "search.targets=[1.5]", "distill.epochs_per_stage=1",
            plan["profile"], "hardware.batch_size=32", "hardware.seq_length=64", *plan["trainer"],
            f"trainer.precision={plan['half_training']}"]  # fmt: skip
    return _ziplm(args, out, "gradual")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for device_check.json and the run folders")
    parser.add_argument("--cpu-dry-run", action="store_true", help="every section at tiny scale on the CPU")
    args = parser.parse_args(argv)
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("error: no CUDA device is visible; run on a GPU machine, or pass --cpu-dry-run", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan, state = _plan(args.cpu_dry_run), {}
    report: dict[str, Any] = {
        "dry_run": args.cpu_dry_run,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() and not args.cpu_dry_run else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "sections": {},
    }
    sections: list[tuple[str, Callable[[], Any]]] = [
        ("tables", lambda: tables(plan, state)),
        ("open_loop", lambda: open_loop(plan, state)),
        ("oneshot_family", lambda: oneshot_family(plan, out)),
        ("gradual_16_mixed", lambda: gradual_half(plan, out)),
    ]
    for name, section in sections:
        started = time.perf_counter()
        print(f"[device_check] {name} ...", flush=True)
        try:
            entry = {"status": "ok", "result": section()}
        except Exception as err:  # record and go on: the other sections still measure something
            entry = {"status": "failed", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        entry["seconds"] = time.perf_counter() - started
        report["sections"][name] = entry
        (out / "device_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"[device_check] {name}: {entry['status']} in {entry['seconds']:.0f} s", flush=True)
    failed = [n for n, e in report["sections"].items() if e["status"] != "ok"]
    print(f"[device_check] wrote {out / 'device_check.json'}; failed sections: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
