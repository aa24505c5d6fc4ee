"""Speed and peak memory of the structured OBS solver (ziplm.core.obs.prune_groups) on BERT-base shapes.

(a) Per layer: the attention output projection (768 × 768, 12 heads of 64 columns, levels 12 … 0) and
    FC2 (768 × 3072, single neurons, the 45-level geometric grid), random weights and random correlated
    positive-definite Hessians. Hessian generation is not timed.
(b) The solver against a naive reference that re-inverts the kept sub-Hessian at every step (d_in 768,
    group size 1, the same inputs): time ratio, and whether both remove the same columns in the same
    order and give the same weights.

    python benchmarks/obs_solver_speed.py               # the full 12-layer figure
    python benchmarks/obs_solver_speed.py --layers 2    # quick look
    python benchmarks/obs_solver_speed.py --threads 1   # torch intra-op threads (default: torch's)

Peak memory is the process's VmHWM from /proc (torch allocations are invisible to tracemalloc), reset
before each solver call via /proc/self/clear_refs where the kernel allows it.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from ziplm.core.levels import ffn_levels, head_levels
from ziplm.core.obs import ObsResult, group_columns, prune_groups

HIDDEN, HEADS, HEAD_DIM, D_FF = 768, 12, 64, 3072
# (removal order, {keep: (kept column ids, kept weights)})
Reference = tuple[list[int], dict[int, tuple[torch.Tensor, torch.Tensor]]]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak() -> bool:
    """Resets VmHWM to the current RSS (Linux ≥ 4.0); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def realistic_hessian(d: int, gen: torch.Generator) -> torch.Tensor:
    """H = mean(2 x xᵀ) for x = A z + μ: correlated inputs, decaying spectrum, a few outlier features."""
    scales = torch.logspace(0, -2, d, dtype=torch.float64)
    mixing = torch.randn(d, d, generator=gen, dtype=torch.float64) * scales / d**0.5
    outliers = torch.randperm(d, generator=gen)[: max(d // 256, 1)]
    mixing[outliers] *= 20.0  # Transformer activations have a few large-magnitude channels
    mean = 0.1 * torch.randn(d, 1, generator=gen, dtype=torch.float64)
    return 2 * (mixing @ mixing.T + mean @ mean.T)


def timed_solve(W: torch.Tensor, H: torch.Tensor, group_size: int, counts: list[int]) -> tuple[float, int]:
    """Runs the solver; returns (seconds, peak RSS in KiB during the call)."""
    _reset_peak()
    start = time.perf_counter()
    prune_groups(W, H, group_size, counts)
    return time.perf_counter() - start, _status_kib("VmHWM")


def bench_layers(n_layers: int, gen: torch.Generator) -> None:
    print(f"\n(a) {n_layers} BERT-base layers, torch threads = {torch.get_num_threads()}")
    print(f"{'layer':>5} | {'attention s':>11} | {'FC2 s':>7} | {'peak RSS GiB':>12}")
    totals = {"attn": 0.0, "ffn": 0.0}
    peak = 0
    head_counts, ffn_counts = head_levels(HEADS), ffn_levels(D_FF)
    for layer in range(n_layers):
        H_attn, H_ffn = realistic_hessian(HIDDEN, gen), realistic_hessian(D_FF, gen)
        W_attn = 0.02 * torch.randn(HIDDEN, HIDDEN, generator=gen)
        W_ffn = 0.02 * torch.randn(HIDDEN, D_FF, generator=gen)
        t_attn, peak_attn = timed_solve(W_attn, H_attn, HEAD_DIM, head_counts)
        t_ffn, peak_ffn = timed_solve(W_ffn, H_ffn, 1, ffn_counts)
        totals["attn"] += t_attn
        totals["ffn"] += t_ffn
        peak = max(peak, peak_attn, peak_ffn)
        gib = max(peak_attn, peak_ffn) / 2**20
        print(f"{layer:>5} | {t_attn:>11.2f} | {t_ffn:>7.2f} | {gib:>12.2f}", flush=True)
    total = totals["attn"] + totals["ffn"]
    print(f"{'total':>5} | {totals['attn']:>11.2f} | {totals['ffn']:>7.2f} | {peak / 2**20:>12.2f}")
    grids = f"{len(head_counts)} head levels, {len(ffn_counts)} FFN levels"
    print(f"solver total {total:.1f} s for {n_layers} layers ({grids})")


def naive_reference(W: torch.Tensor, H: torch.Tensor, counts: list[int], damp: float = 0.01) -> Reference:
    """Greedy OBS for single columns by brute force: re-invert H[K, K] and re-solve W at every step.

    The current OBS weights for kept columns K are W H[:, K] H[K, K]⁻¹ (the least-squares optimum), so
    each step recomputes them and the scores ‖W_K[:, j]‖² / (H[K, K]⁻¹)_jj from scratch.
    """
    W64, Hd = W.double(), H.double().clone()
    Hd.diagonal().add_(damp * Hd.diagonal().mean())
    kept = torch.arange(W.shape[1])
    order: list[int] = []
    snapshots: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    wanted = set(counts)
    while True:
        Hinv = torch.cholesky_inverse(torch.linalg.cholesky(Hd[kept][:, kept]))
        W_kept = (W64 @ Hd[:, kept]) @ Hinv
        if len(kept) in wanted:
            snapshots[len(kept)] = (kept.clone(), W_kept)
        if len(kept) == counts[-1]:
            return order, snapshots
        j = int((W_kept.pow(2).sum(0) / Hinv.diagonal()).argmin())
        order.append(int(kept[j]))
        kept = torch.cat([kept[:j], kept[j + 1 :]])


def compare(result: ObsResult, reference: Reference, counts: list[int]) -> tuple[bool, float]:
    """Same removal order?, max relative difference of the kept weights over levels with equal sets."""
    order, snapshots = reference
    same_order = result.removal_order.tolist() == order
    worst = 0.0
    for keep in counts:
        level, (kept, W_ref) = result.level(keep), snapshots[keep]
        if keep == 0 or not torch.equal(group_columns(level.kept_groups, 1), kept):
            continue
        worst = max(worst, float((level.weight.double() - W_ref).norm() / W_ref.norm()))
    return same_order, worst


def bench_reference(gen: torch.Generator, d_in: int, d_out: int) -> None:
    print(f"\n(b) fast solver vs naive re-inversion, d_in = {d_in}, d_out = {d_out}, group size 1")
    H = realistic_hessian(d_in, gen)
    W = 0.02 * torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    counts = ffn_levels(d_in)
    start = time.perf_counter()
    result = prune_groups(W, H, 1, counts)
    t_fast = time.perf_counter() - start
    start = time.perf_counter()
    reference = naive_reference(W, H, counts)
    t_naive = time.perf_counter() - start
    same_order, worst = compare(result, reference, counts)
    print(f"fast {t_fast:.2f} s | naive {t_naive:.2f} s | speed-up {t_naive / t_fast:.0f}×")
    print(f"same removal order: {same_order} | max rel. weight diff. ({len(counts)} levels): {worst:.1e}")


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--layers", type=int, default=12, help="BERT-base layers to solve (default 12)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-reference", action="store_true", help="skip the naive comparison (b)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    if not _reset_peak():
        print("note: /proc/self/clear_refs not writable; peak RSS is the process-wide maximum")
    bench_layers(args.layers, gen)
    if not args.skip_reference:
        bench_reference(gen, d_in=HIDDEN, d_out=HIDDEN)
    print(f"load average at the end {os.getloadavg()[0]:.2f} (other processes on the CPUs slow every figure)")


if __name__ == "__main__":
    main()
