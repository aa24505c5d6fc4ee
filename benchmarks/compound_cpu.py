"""Compound compression on CPU: structured 2× member, then unstructured 50% (OBS or magnitude) and INT8.

MiniLM fine-tuned on BBC News (the main job's cached teacher), its one-shot 2× family member, and that
member compressed further, side by side in one process: accuracy, and CPU latency at batch 32 × seq 128
and batch 1 × seq 128, all models timed interleaved (drift hits them alike; speedups are over dense).

    python benchmarks/compound_cpu.py                  # cached teacher, newest outputs/run/default/*/family/2x
    python benchmarks/compound_cpu.py --member outputs/run/default/<time>/family/2x
    python benchmarks/compound_cpu.py --quick          # tiny BERT + generated task in a temp folder: wiring check

Without a saved 2× member it runs the one-shot pipeline for target 2 first (``ziplm run search.targets=[2]``,
minutes). Expect no speedup from unstructured zeros (PyTorch's dense CPU kernels multiply them like any
value; the paper used a sparsity-aware engine) and a real one from INT8 dynamic quantization.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from run_setup import settings_data_teacher

from ziplm.compress import CompressionSettings, compress, sparsity_report
from ziplm.config.paths import compose
from ziplm.data.calibration import calibration_batches
from ziplm.eval.metrics import METRICS
from ziplm.latency.measure import interleaved_medians
from ziplm.lit.phases import evaluate
from ziplm.models import load_pruned
from ziplm.pipelines.prune import run_prune

QUICK = ["experiment=smoke", "hardware.repetitions=3", "hardware.max_seconds_per_entry=1.0"]


def find_member(cfg: DictConfig, target: float) -> Path | None:
    """The newest complete member for `target` of a run with this config's name, if any."""
    pattern = f"*/family/{target:g}x/metrics.json"
    found = sorted((Path(str(cfg.output_root)) / "run" / str(cfg.name)).glob(pattern))
    return found[-1].parent if found else None


def member_for(cfg: DictConfig, overrides: list[str], target: float, given: str | None) -> Path:
    if given:
        return Path(given)
    folder = find_member(cfg, target)
    if folder is None:
        print(f"no saved {target:g}x member: running the one-shot pipeline for it first", flush=True)
        run_prune(compose([*overrides, f"search.targets=[{target:g}]"], command="run"))
        folder = find_member(cfg, target)
    if folder is None:
        raise FileNotFoundError(f"the one-shot run did not leave a family/{target:g}x member")
    return folder


def serialized_mb(model: torch.nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 2**20


def variants(teacher: Any, member: Any, batches: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Every model of the table, by row name, with the wall time of making each."""
    int8 = CompressionSettings(int8=True)
    started = time.perf_counter()
    obs = compress(member, batches, CompressionSettings(unstructured="obs", sparsity=0.5))
    print(f"OBS 50% of the member: {time.perf_counter() - started:.1f} s", flush=True)
    return {
        "dense": teacher,
        "dense + INT8": compress(teacher, [], int8),
        "2x": member,
        "2x + INT8": compress(member, [], int8),
        "2x + OBS 50%": obs,
        "2x + OBS 50% + INT8": compress(obs, [], int8),
        "2x + magnitude 50% + INT8": compress(
            member, [], CompressionSettings(unstructured="magnitude", sparsity=0.5, int8=True)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--member", help="a saved 2x family member folder (default: newest of this config's runs)")
    parser.add_argument("--target", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds per batch size")
    parser.add_argument("--quick", action="store_true", help="tiny model + generated task in a temp folder")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (default: the main job's config)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = ["logger=none", *args.overrides]
        if args.quick:
            overrides = [*QUICK, f"output_root={tmp}", *overrides]
            args.rounds = min(args.rounds, 3)
        run(overrides, args)


def run(overrides: list[str], args: argparse.Namespace) -> None:
    cfg = compose(overrides, command="run")
    settings, data, teacher, cached, _ = settings_data_teacher(cfg)
    env = settings.hardware
    member = load_pruned(member_for(cfg, overrides, args.target, args.member))
    wanted = int(cfg.compression.calibration_samples)
    batches = calibration_batches(data.train_features, wanted, 32, settings.seed)
    samples = sum(len(b["input_ids"]) for b in batches)
    models = variants(teacher.eval(), member, batches)
    metric = METRICS[settings.task.metric].headline
    on_cpu = {"accelerator": "cpu", "devices": 1}  # INT8 kernels are CPU kernels
    scores = {
        name: evaluate(m, data.task, data.eval_examples, data.eval_features, on_cpu, 64, show_progress=False)[metric]
        for name, m in models.items()
    }
    envs = {"b32": env, "b1": dataclasses.replace(env, batch_size=1)}
    times = {key: interleaved_medians(list(models.values()), env, args.rounds) for key, env in envs.items()}
    print(
        f"\n{settings.model.name} on {settings.task.name} ({'cached' if cached else 'new'} teacher), {env.device} "
        f"{torch.get_num_threads()} threads, seq {env.seq_length}; {samples} OBS calibration samples"
    )
    header = f"{'model':<27}{metric:>9}{'ms b' + str(env.batch_size):>10}{'speedup':>9}{'ms b1':>8}{'speedup':>9}"
    print(header + f"{'zeros':>7}{'MB':>7}")
    for i, (name, model) in enumerate(models.items()):
        b32, b1 = times["b32"], times["b1"]
        print(
            f"{name:<27}{scores[name]:>9.2f}{b32[i] * 1e3:>10.1f}{b32[0] / b32[i]:>9.2f}{b1[i] * 1e3:>8.1f}"
            f"{b1[0] / b1[i]:>9.2f}{sparsity_report(model).overall:>7.0%}{serialized_mb(model):>7.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
