"""Peak memory of a levels-database build beyond the model's weights: whole-model vs layer-wise calibration.

A GPT-2-style model of fixed width (hidden 512, FFN 2048, 8 heads, random weights) at depths 4 and 16;
each (mode, depth) builds its database in a fresh subprocess. Whole-model calibration holds every layer's
float64 Hessians at once (d² + d_ff² per layer), so its peak grows with depth; layer-wise holds one
layer's, so its peak stays flat. The grids are coarse (FFN groups of 32, ratio 0.5) to keep the solver
quick: they change the time, not the Hessians' size. Both modes also hold one layer's OBS solver state
(d_ff² float64 matrices, a constant in depth), so whole-model's peak grows less than its Hessians (L×).

Measured on CPU as peak RSS during the build (VmHWM, reset right before it) minus RSS after the model is
loaded and has run one forward pass; glibc's mmap threshold is pinned so freed large blocks leave RSS.
On CUDA (``--device cuda``): ``torch.cuda.max_memory_allocated`` during the build minus what was
allocated before it (the weights).

    python benchmarks/calibration_memory.py                    # depths 4 and 16, ~5-7 min on 2 cores
    python benchmarks/calibration_memory.py --depths 2 4 --samples 8   # quick look
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("whole", "layerwise")


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _child(args: argparse.Namespace) -> dict[str, float]:
    """Build one database; return the peak memory beyond the loaded model (MiB) and the time."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from ziplm.pruning.database_builder import DatabaseSettings, build_database

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=1024, n_positions=args.seq, n_embd=args.hidden, n_layer=args.depth, n_head=args.heads,
        n_inner=args.ffn,
    )  # fmt: skip
    model = GPT2LMHeadModel(config).eval().to(args.device)
    batches = []
    for _ in range(max(1, args.samples // args.batch)):
        ids = torch.randint(0, 1024, (args.batch, args.seq))
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    with torch.no_grad():
        model(**{k: v.to(args.device) for k, v in batches[0].items()})  # one-time library buffers
    gc.collect()
    settings = DatabaseSettings(ffn_group_size=32, ffn_grid_ratio=0.5, calibration=args.mode)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_mib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        build_database(model, batches, folder, settings, show_progress=False)
    seconds = time.perf_counter() - started
    if cuda:
        torch.cuda.synchronize()
        beyond = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        beyond = _rss_mib("VmHWM") - base
    return {"beyond_mib": beyond, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--ffn", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--samples", type=int, default=16, help="calibration sequences")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args)))
        return
    # Freed blocks above 128 KiB go back to the OS at once (glibc would otherwise raise its mmap threshold
    # and keep them), so peak RSS follows what is live.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    common = [f"--{k}={getattr(args, k)}" for k in ("hidden", "ffn", "heads", "samples", "batch", "seq", "device")]
    results: dict[tuple[str, int], dict[str, float]] = {}
    for mode in MODES:
        for depth in args.depths:
            command = [sys.executable, __file__, "--child", f"--mode={mode}", f"--depth={depth}", *common]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            results[(mode, depth)] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  {mode} depth {depth}: {results[(mode, depth)]}", file=sys.stderr)
    where = "peak RSS" if args.device == "cpu" else "torch.cuda.max_memory_allocated"
    print(
        f"GPT-2-style, hidden {args.hidden}, FFN {args.ffn}, {args.heads} heads; {args.samples} x {args.seq} "
        f"calibration tokens on {args.device}; {where} beyond the loaded model, MiB (build seconds)\n"
    )
    first, last = args.depths[0], args.depths[-1]
    print("| mode | " + " | ".join(f"depth {d}" for d in args.depths) + f" | ratio {last}/{first} |")
    print("|---|" + "---:|" * (len(args.depths) + 1))
    for mode in MODES:
        cells = [f"{results[(mode, d)]['beyond_mib']:.0f} ({results[(mode, d)]['seconds']:.0f} s)" for d in args.depths]
        ratio = results[(mode, last)]["beyond_mib"] / results[(mode, first)]["beyond_mib"]
        print(f"| {mode} | " + " | ".join(cells) + f" | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
