"""Time and peak memory of building the whole levels database for BERT-base dimensions on this CPU.

12 layers, hidden 768, 12 heads, FFN 3072 (random weights), 512 calibration sequences x 128 tokens,
neuron group size 1, the spec's level grids. Split into calibration forward passes (with Hessian
accumulation) vs the structured OBS solver (+ per-level errors and writing). The solver-only
comparison against a naive reference lives in benchmarks/obs_solver_speed.py.

    python benchmarks/obs_speed.py                 # the full figure (several minutes)
    python benchmarks/obs_speed.py --samples 64 --layers 2   # quick look
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from ziplm.models import ModelSpec, build_model
from ziplm.pruning.database_builder import build_database


def peak_rss_gb() -> float:
    """Peak resident memory of this process (VmHWM), GiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    torch.manual_seed(0)
    spec = ModelSpec(
        name="bert-base",
        family="bert",
        source="scratch",
        hidden_size=768,
        num_layers=args.layers,
        num_heads=12,
        intermediate_size=3072,
        vocab_size=30522,
        max_position_embeddings=512,
    )
    model = build_model(spec, "base").eval()
    batches = []
    for _ in range(args.samples // args.batch):
        ids = torch.randint(0, 30522, (args.batch, args.seq))
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; BERT-base dims, "
        f"{args.layers} layers, "
        f"{args.samples} x {args.seq} calibration tokens, FFN group size 1"
    )
    before = peak_rss_gb()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        db = build_database(model, batches, tmp, show_progress=False)
        total = time.perf_counter() - started
        size = sum(f.stat().st_size for f in db.folder.iterdir()) / 2**30
    cal, obs = db.build_seconds["calibration"], db.build_seconds["obs"]
    print(f"calibration forward passes + Hessians: {cal:8.1f} s")
    print(f"structured OBS + errors + writing:     {obs:8.1f} s  ({obs / args.layers:.1f} s per layer)")
    print(f"total:                                 {total:8.1f} s")
    print(f"database on disk: {size:.2f} GiB; peak RSS {peak_rss_gb():.2f} GiB (model + data: {before:.2f} GiB)")


if __name__ == "__main__":
    main()
