"""Structured OBS solver: exactness against closed forms, greedy choice, robustness, input checks."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch

from ziplm.core.obs import ObsResult, group_columns, prune_groups

F64 = torch.float64
Problem = tuple[torch.Tensor, torch.Tensor, int]  # W (d_out, d_in), H (d_in, d_in), group size


@pytest.fixture(autouse=True)
def _single_thread():
    """These matrices are tiny: intra-op threads only add synchronisation, which stalls badly when
    another process holds a core."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def correlated_inputs(d_in: int, n_tokens: int, seed: int) -> torch.Tensor:
    """(d_in, n_tokens) inputs X = A·Z with a random mixing A, so that columns are correlated."""
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d_in, d_in, generator=gen, dtype=F64) / d_in**0.5
    mixing += 0.3 * torch.eye(d_in, dtype=F64)
    scales = torch.logspace(0, -1.5, d_in, dtype=F64)  # uneven input scales, as in real activations
    return (mixing * scales) @ torch.randn(d_in, n_tokens, generator=gen, dtype=F64)


def hessian_of(X: torch.Tensor) -> torch.Tensor:
    return 2 * X @ X.T / X.shape[1]


def damped(H: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    Hd = H.clone()
    Hd.diagonal().add_(damp * H.diagonal().mean())
    return Hd


def full_weight(W: torch.Tensor, kept_cols: torch.Tensor, kept_weight: torch.Tensor) -> torch.Tensor:
    """The pruned matrix in the original layout, removed columns zero."""
    out = torch.zeros_like(W, dtype=F64)
    out[:, kept_cols] = kept_weight.to(F64)
    return out


@pytest.fixture(params=[1, 16], ids=["g1", "g16"])
def problem(request: pytest.FixtureRequest) -> tuple[torch.Tensor, torch.Tensor, int]:
    torch.manual_seed(0)
    d_in, d_out = 128, 24
    X = correlated_inputs(d_in, 4 * d_in, seed=1)
    W = torch.randn(d_out, d_in, dtype=F64)
    return W, hessian_of(X), request.param


def test_kept_columns_are_the_damped_least_squares_optimum(problem: Problem):
    W, H, g = problem
    n_groups = W.shape[1] // g
    # A small rank budget forces many flushes and compactions of the lazy solver.
    res = prune_groups(W, H, g, list(range(n_groups, -1, -1)), rank_budget=3 * g)
    Hd = damped(H)
    for lvl in res.levels[1:-1]:
        K = group_columns(lvl.kept_groups, g)
        optimum = W @ Hd[:, K] @ torch.linalg.inv(Hd[K][:, K])
        rel = (lvl.weight - optimum).norm() / optimum.norm()
        assert rel < 1e-6, (lvl.keep, rel.item())


def test_loss_is_the_increase_of_the_damped_reconstruction_error(problem: Problem):
    W, H, g = problem
    n_groups = W.shape[1] // g
    res = prune_groups(W, H, g, list(range(n_groups, -1, -1)))
    Hd = damped(H)
    for lvl in res.levels:
        dW = full_weight(W, group_columns(lvl.kept_groups, g), lvl.weight) - W
        # H = mean(2 x xᵀ), so mean ‖ΔW x‖² = tr(ΔW E[x xᵀ] ΔWᵀ) = ½ tr(ΔW H ΔWᵀ): the ½ undoes the 2 in H.
        increase = 0.5 * torch.trace(dW @ Hd @ dW.T).item()
        assert lvl.loss == pytest.approx(increase, rel=1e-9, abs=1e-12)
    assert res.removal_losses.sum().item() == pytest.approx(res.levels[-1].loss, rel=1e-12)


def test_loss_equals_mean_output_error_without_damping():
    torch.manual_seed(1)
    X = correlated_inputs(48, 400, seed=2)
    W = torch.randn(10, 48, dtype=F64)
    res = prune_groups(W, hessian_of(X), 4, [12, 9, 5, 0], damp=0.0)
    for lvl in res.levels:
        W_hat = full_weight(W, group_columns(lvl.kept_groups, 4), lvl.weight)
        mean_sq_error = ((W - W_hat) @ X).pow(2).sum().item() / X.shape[1]
        assert lvl.loss == pytest.approx(mean_sq_error, rel=1e-9)


def test_first_removal_is_the_brute_force_best_group(problem: Problem):
    W, H, g = problem
    n_groups = W.shape[1] // g
    Hd = damped(H)
    errors = []
    for m in range(n_groups):
        K = group_columns(torch.tensor([i for i in range(n_groups) if i != m]), g)
        W_hat = torch.zeros_like(W)
        W_hat[:, K] = W @ Hd[:, K] @ torch.linalg.inv(Hd[K][:, K])
        dW = W_hat - W
        errors.append(0.5 * torch.trace(dW @ Hd @ dW.T).item())
    res = prune_groups(W, H, g, [n_groups - 1])
    best = min(range(n_groups), key=errors.__getitem__)
    assert int(res.removal_order[0]) == best
    assert res.levels[0].loss == pytest.approx(errors[best], rel=1e-9)


def test_levels_are_nested_and_sorted(problem: Problem):
    W, H, g = problem
    n_groups = W.shape[1] // g
    counts = [n_groups, n_groups - 1, n_groups // 2, 3, 0]
    res = prune_groups(W, H, g, counts)
    assert [lvl.keep for lvl in res.levels] == counts
    for bigger, smaller in pairwise(res.levels):
        assert set(smaller.kept_groups.tolist()) <= set(bigger.kept_groups.tolist())
        assert smaller.loss >= bigger.loss
    for lvl in res.levels:
        assert torch.equal(lvl.kept_groups, lvl.kept_groups.sort().values)
        assert lvl.weight.shape == (W.shape[0], lvl.keep * g)
    order = res.removal_order.tolist()
    assert sorted(order) == list(range(n_groups))
    assert sorted(order[-3:]) == res.level(3).kept_groups.tolist()


def reference_obs(W: torch.Tensor, H: torch.Tensor, g: int, n_remove: int) -> tuple[list[int], torch.Tensor]:
    """The spec's loop verbatim: full-matrix update and downdate each step (float64)."""
    W, Hinv = W.clone(), torch.linalg.inv(damped(H))
    n_groups, order = W.shape[1] // g, list[int]()
    for _ in range(n_remove):
        blocks = Hinv.reshape(n_groups, g, n_groups, g).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
        Wg = W.reshape(-1, n_groups, g)
        scores = torch.einsum("oma,mab,omb->m", Wg, torch.linalg.inv(blocks), Wg)
        scores[order] = torch.inf
        m = int(scores.argmin())
        M = slice(m * g, (m + 1) * g)
        Binv = torch.linalg.inv(Hinv[M, M])
        W -= W[:, M] @ Binv @ Hinv[M, :]
        W[:, M] = 0
        Hinv -= Hinv[:, M] @ Binv @ Hinv[M, :]
        Hinv[M, M] = torch.eye(g, dtype=F64)  # keep later blocks invertible; m is masked anyway
        order.append(m)
    return order, W


@pytest.mark.parametrize("g", [1, 8])
def test_matches_the_textbook_full_update_loop(g: int):
    torch.manual_seed(3)
    X = correlated_inputs(64, 256, seed=4)
    W = torch.randn(16, 64, dtype=F64)
    n_groups = 64 // g
    order, W_ref = reference_obs(W, hessian_of(X), g, n_groups - 2)
    res = prune_groups(W, hessian_of(X), g, [2], rank_budget=5 * g)
    assert res.removal_order.tolist() == order
    K = group_columns(res.levels[0].kept_groups, g)
    torch.testing.assert_close(res.levels[0].weight, W_ref[:, K], rtol=1e-8, atol=1e-10)


def magnitude_prune(W: torch.Tensor, keep: int) -> torch.Tensor:
    """Baseline: keep the largest-norm columns unchanged, zero the rest."""
    kept = W.norm(dim=0).topk(keep).indices
    out = torch.zeros_like(W)
    out[:, kept] = W[:, kept]
    return out


def test_obs_beats_magnitude_pruning_on_redundant_inputs(capsys: pytest.CaptureFixture[str]):
    gen = torch.Generator().manual_seed(5)
    n_pairs, n_unique, n_tokens = 12, 12, 2000
    # Twins: 12 signals each fed twice (tiny noise) with large weights; magnitude keeps both copies.
    base = torch.randn(n_pairs, n_tokens, generator=gen, dtype=F64)
    twins = torch.cat([base, base + 0.01 * torch.randn(base.shape, generator=gen, dtype=F64)])
    # Unique inputs carry strong signals with small weights; magnitude pruning drops them.
    unique = 4.0 * torch.randn(n_unique, n_tokens, generator=gen, dtype=F64)
    X = torch.cat([twins, unique])
    W = torch.cat(
        [
            3.0 * torch.randn(8, 2 * n_pairs, generator=gen, dtype=F64),
            torch.randn(8, n_unique, generator=gen, dtype=F64),
        ],
        dim=1,
    )
    keep = 2 * n_pairs + n_unique - n_pairs  # drop as many columns as there are twins
    res = prune_groups(W, hessian_of(X), 1, [keep], damp=1e-4)
    W_obs = full_weight(W, res.levels[0].kept_groups, res.levels[0].weight)
    err_obs = ((W - W_obs) @ X).pow(2).sum().item() / n_tokens
    err_mag = ((W - magnitude_prune(W, keep)) @ X).pow(2).sum().item() / n_tokens
    with capsys.disabled():
        print(f"\n  mean ‖WX − ŴX‖², {n_pairs} of 36 columns removed: OBS {err_obs:.4g}, magn. {err_mag:.4g}")
    assert err_obs < 0.01 * err_mag


def test_dead_columns_are_zeroed_and_removed_first():
    torch.manual_seed(6)
    X = correlated_inputs(32, 200, seed=7)
    X[[3, 17]] = 0  # inputs that never fire
    W = torch.randn(6, 32, dtype=F64)
    res = prune_groups(W, hessian_of(X), 1, [32, 30, 10])
    assert set(res.removal_order[:2].tolist()) == {3, 17}
    assert res.levels[1].loss == pytest.approx(0.0, abs=1e-12)
    # The "nothing removed" level already has the dead columns zeroed (they never affect the output).
    assert torch.equal(res.levels[0].weight[:, [3, 17]], torch.zeros(6, 2, dtype=F64))


def test_nothing_removed_and_everything_removed_levels():
    torch.manual_seed(8)
    W = torch.randn(5, 40)  # float32 in, float32 out
    H = hessian_of(correlated_inputs(40, 120, seed=9)).float()
    res = prune_groups(W, H, 8, [5, 0])
    full, empty = res.levels
    assert torch.equal(full.weight, W) and full.weight.dtype == torch.float32
    assert torch.equal(full.kept_groups, torch.arange(5)) and full.loss == 0.0
    assert empty.weight.shape == (5, 0) and empty.kept_groups.numel() == 0
    assert empty.loss == pytest.approx(res.removal_losses.sum().item())
    assert isinstance(res, ObsResult) and res.level(0) is empty
    numpy_counts = prune_groups(W, H, 8, np.array([5, 2]))  # numpy / torch integers are fine
    assert [lvl.keep for lvl in numpy_counts.levels] == [5, 2]
    with pytest.raises(KeyError, match="keep=3"):
        res.level(3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"W": torch.randn(4)}, "W must be 2-D"),
        ({"H": torch.randn(8, 7)}, "H must be a square"),
        ({"H": torch.eye(6)}, "W and H mismatch"),
        ({"group_size": 3}, "does not divide d_in=8"),
        ({"group_size": 0}, "group_size must be a positive int"),
        ({"keep_counts": []}, "keep_counts is empty"),
        ({"keep_counts": [5]}, r"not an int in \[0, n_groups=4\]"),
        ({"keep_counts": [-1]}, r"not an int in \[0, n_groups=4\]"),
        ({"keep_counts": [2, 3]}, "strictly decreasing"),
        ({"keep_counts": [2, 2]}, "strictly decreasing"),
        ({"keep_counts": [2.0]}, "not an int"),
        ({"damp": -0.1}, "damp must be"),
        ({"W": torch.full((3, 8), float("nan"))}, "W contains NaN or Inf"),
        ({"H": torch.diag(torch.tensor([float("inf")] + [1.0] * 7))}, "H contains NaN or Inf"),
        ({"H": -torch.eye(8), "damp": 0.0}, "not positive definite"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs: dict, message: str):
    args = {"W": torch.randn(3, 8), "H": torch.eye(8), "group_size": 2, "keep_counts": [4, 0]} | kwargs
    with pytest.raises(ValueError, match=message):
        prune_groups(**args)
