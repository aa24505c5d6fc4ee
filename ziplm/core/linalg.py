"""Dense linear algebra the solvers need and LAPACK serves slowly on CPUs."""

from __future__ import annotations

import torch

__all__ = ["spd_inverse"]


def spd_inverse(A: torch.Tensor, leaf: int = 128) -> torch.Tensor:
    """(n, n) inverse of an (n, n) SPD matrix by recursive 2 × 2 block elimination (ValueError if not PD).

    LAPACK's SPD inverse (``potri``) ran ~7× slower than matrix products on our CPUs (4.7 s vs 0.65 s at
    n = 3072); this recursion spends ~all of its (4/3)·n³ flops in matrix products. Schur complements of
    SPD matrices are SPD, so a non-PD input shows up as a failed Cholesky in some leaf of size <= leaf.
    """
    n = A.shape[0]
    if n <= leaf:
        chol, info = torch.linalg.cholesky_ex(A)
        if info.item() != 0:
            raise ValueError("matrix is not positive definite")
        return torch.cholesky_inverse(chol)
    m = n // 2
    top_left, top_right = A[:m, :m], A[:m, m:]
    inv_tl = spd_inverse(top_left, leaf)
    inv_tl_tr = inv_tl @ top_right  # (m, n − m)
    schur = torch.addmm(A[m:, m:], top_right.T, inv_tl_tr, alpha=-1.0)
    inv_schur = spd_inverse(schur, leaf)
    x = inv_tl_tr @ inv_schur
    out = torch.empty_like(A)
    torch.addmm(inv_tl, x, inv_tl_tr.T, out=out[:m, :m])
    torch.neg(x, out=out[:m, m:])
    out[m:, :m] = out[:m, m:].T
    out[m:, m:] = inv_schur
    return out
