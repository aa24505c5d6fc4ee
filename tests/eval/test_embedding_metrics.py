"""Embedding fidelity and STS metrics against brute force (scipy / numpy)."""

from __future__ import annotations

import csv
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from ziplm.eval.embedding import fidelity, spearman, sts_spearman
from ziplm.eval.metrics import compute_metric


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_spearman_matches_scipy_with_ties() -> None:
    a = torch.tensor([1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 5.0, 0.5])
    b = torch.tensor([2.0, 1.0, 4.0, 4.0, 3.0, 9.0, 0.0, 1.0])
    assert spearman(a, b) == pytest.approx(spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-12)


def test_fidelity_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(12, 5))
    student = dense + 0.6 * rng.normal(size=(12, 5))
    got = fidelity(torch.tensor(student), torch.tensor(dense), k=3)

    mean_cos = np.mean([_cos(student[i], dense[i]) for i in range(12)])
    pairs = list(combinations(range(12), 2))
    sims_s = [_cos(student[i], student[j]) for i, j in pairs]
    sims_d = [_cos(dense[i], dense[j]) for i, j in pairs]

    def neighbours(x: np.ndarray, i: int, k: int) -> list[int]:
        others = [j for j in range(12) if j != i]
        return sorted(others, key=lambda j: -_cos(x[i], x[j]))[:k]

    top1 = np.mean([neighbours(student, i, 1) == neighbours(dense, i, 1) for i in range(12)])
    top3 = np.mean([len(set(neighbours(student, i, 3)) & set(neighbours(dense, i, 3))) / 3 for i in range(12)])
    assert got["mean_cosine"] == pytest.approx(mean_cos, abs=1e-9)
    assert got["pairwise_spearman"] == pytest.approx(spearmanr(sims_s, sims_d).statistic, abs=1e-9)
    assert got["nn_top1"] == pytest.approx(top1) and got["nn_top3"] == pytest.approx(top3)
    assert 0 < got["mean_cosine"] < 1 and got["nn_top1"] < 1  # the noise is big enough to show


def test_fidelity_of_the_dense_model_to_itself_is_perfect() -> None:
    dense = torch.randn(20, 8)
    got = compute_metric("embedding_fidelity", dense, dense)
    assert got == pytest.approx({"mean_cosine": 1.0, "pairwise_spearman": 1.0, "nn_top1": 1.0, "nn_top10": 1.0})


def test_the_headlines_are_among_the_scores() -> None:
    from ziplm.eval.metric_info import METRICS

    vectors = torch.randn(6, 3)
    assert METRICS["embedding_fidelity"].headline in compute_metric("embedding_fidelity", vectors, vectors + 0.1)
    pairs = (vectors[:3], vectors[3:])
    assert METRICS["sts_spearman"].headline in compute_metric("sts_spearman", pairs, torch.tensor([1.0, 3.0, 2.0]))


def test_fidelity_needs_matching_rows() -> None:
    with pytest.raises(ValueError, match="5 student embeddings but 4 dense"):
        fidelity(torch.randn(5, 3), torch.randn(4, 3))


def test_sts_spearman_on_a_local_pair_file(tmp_path: Path) -> None:
    """The STS score of pairs read from a small local file: Spearman (x100) of each pair's cosine vs gold."""
    path = tmp_path / "pairs.csv"
    rng = np.random.default_rng(1)
    vectors = {f"s{i}": rng.normal(size=4) for i in range(8)}
    rows = [("s0", "s1", 4.5), ("s2", "s3", 1.0), ("s4", "s5", 3.2), ("s6", "s7", 0.2), ("s0", "s2", 2.5)]
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([("sentence1", "sentence2", "label"), *rows])
    with path.open() as handle:
        read = list(csv.DictReader(handle))
    first = torch.tensor(np.stack([vectors[r["sentence1"]] for r in read]))
    second = torch.tensor(np.stack([vectors[r["sentence2"]] for r in read]))
    gold = torch.tensor([float(r["label"]) for r in read])
    expected = 100 * spearmanr([_cos(vectors[a], vectors[b]) for a, b, _ in rows], [g for *_, g in rows]).statistic
    assert sts_spearman(first, second, gold)["sts_spearman"] == pytest.approx(expected, abs=1e-9)
    assert compute_metric("sts_spearman", (first, second), gold) == sts_spearman(first, second, gold)
