"""Fidelity of a pruned sentence embedder to the dense one, and STS scoring: embeddings in, floats out.

Users of an embedding model rank, cluster and deduplicate by cosine similarity, so a member is good when
it keeps the dense model's geometry, not just each vector's direction. Reported (all on a 0-1 scale, 1 =
identical to dense):

- ``mean_cosine`` (the headline): mean cos(student_i, dense_i) over held-out texts;
- ``pairwise_spearman``: Spearman correlation between the student's and the dense model's cosine
  similarities over all pairs of (a sample of) the held-out texts: does it order pairs the same way?
- ``nn_top1``: share of texts whose nearest neighbour (by cosine, itself excluded) is the dense model's;
- ``nn_top{k}``: mean overlap of the k nearest neighbours, |student ∩ dense| / k.

STS (``sts_spearman``) is the usual benchmark score: Spearman correlation of each pair's cosine with its
gold similarity, x100 like the GLUE correlations in ``ziplm.eval.metrics``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PAIRWISE_SAMPLE = 1000  # texts whose all pairs are correlated (500k pairs; the first rows, held-out order)
NEIGHBOURS = 10


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share their mean rank), as Spearman's rho needs."""
    order = values.argsort()
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order] = torch.arange(len(values), dtype=torch.float64)
    unique, inverse = torch.unique(values, return_inverse=True)
    if len(unique) < len(values):  # ties: replace each rank by its group's mean
        sums = torch.zeros(len(unique), dtype=torch.float64).scatter_add_(0, inverse, ranks)
        counts = torch.zeros(len(unique), dtype=torch.float64).scatter_add_(0, inverse, torch.ones_like(ranks))
        ranks = (sums / counts)[inverse]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two equal-length vectors (Pearson of their average ranks)."""
    if a.shape != b.shape or a.numel() < 2:
        raise ValueError(f"spearman needs two equal-length vectors of >= 2 values, got {a.numel()} and {b.numel()}")
    ra, rb = _ranks(a.double().flatten()), _ranks(b.double().flatten())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = (ra.norm() * rb.norm()).item()
    return float((ra @ rb).item() / denominator) if denominator > 0 else 0.0


def _similarities(embeddings: torch.Tensor) -> torch.Tensor:
    unit = F.normalize(embeddings.double(), dim=-1)
    return unit @ unit.T


def fidelity(student: torch.Tensor, dense: torch.Tensor, k: int = NEIGHBOURS) -> dict[str, float]:
    """How faithfully `student` embeddings (n, d) reproduce the `dense` ones (n, d') of the same n texts.

    The pairwise and neighbour metrics use the first `PAIRWISE_SAMPLE` texts; ``k`` shrinks to n − 1.

    Raises:
        ValueError: different numbers of texts, or fewer than 3 (no pair order, no neighbours to compare).
    """
    if student.shape[0] != dense.shape[0]:
        raise ValueError(f"{student.shape[0]} student embeddings but {dense.shape[0]} dense ones")
    if student.shape[0] < 3:
        raise ValueError(f"fidelity needs at least 3 held-out texts, got {student.shape[0]}")
    if student.shape[1] != dense.shape[1]:
        raise ValueError(f"student embeddings have {student.shape[1]} dimensions, dense {dense.shape[1]}")
    cosines = F.cosine_similarity(student.double(), dense.double(), dim=-1, eps=1e-12)
    s, d = student[:PAIRWISE_SAMPLE], dense[:PAIRWISE_SAMPLE]
    n = s.shape[0]
    sim_s, sim_d = _similarities(s), _similarities(d)
    upper = torch.triu_indices(n, n, offset=1)
    pairwise = spearman(sim_s[upper[0], upper[1]], sim_d[upper[0], upper[1]])
    eye = torch.eye(n, dtype=torch.bool)
    sim_s, sim_d = sim_s.masked_fill(eye, -torch.inf), sim_d.masked_fill(eye, -torch.inf)
    k = min(k, n - 1)
    top_s, top_d = sim_s.topk(k, dim=-1).indices, sim_d.topk(k, dim=-1).indices
    top1 = float((top_s[:, 0] == top_d[:, 0]).double().mean())
    overlap = torch.tensor([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(top_s, top_d, strict=True)])
    return {
        "mean_cosine": float(cosines.mean()),
        "pairwise_spearman": pairwise,
        "nn_top1": top1,
        f"nn_top{k}": float(overlap.double().mean()),
    }


def sts_spearman(first: torch.Tensor, second: torch.Tensor, gold: torch.Tensor) -> dict[str, float]:
    """STS score of sentence pairs: Spearman (x100) of cos(first_i, second_i) against the gold scores."""
    if not (first.shape[0] == second.shape[0] == gold.numel()):
        raise ValueError(f"{first.shape[0]} / {second.shape[0]} pair embeddings but {gold.numel()} gold scores")
    cosines = F.cosine_similarity(first.double(), second.double(), dim=-1, eps=1e-12)
    return {"sts_spearman": 100 * spearman(cosines, gold.double().flatten())}
