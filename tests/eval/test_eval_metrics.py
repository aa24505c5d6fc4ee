"""Metrics against numbers computed by hand or with numpy formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ziplm.eval.metrics import METRICS, compute_metric, perplexity, summed_nll


def test_accuracy_from_ids_and_from_logits() -> None:
    assert compute_metric("accuracy", [0, 1, 1, 2], [0, 1, 2, 2]) == {"accuracy": 75.0}
    logits = torch.tensor([[2.0, 0.1], [0.3, 0.9], [1.0, -1.0]])
    assert compute_metric("accuracy", logits, [0, 1, 1]) == pytest.approx({"accuracy": 200 / 3})


def test_binary_f1_reports_accuracy_too() -> None:
    # TP = 2 (items 0, 4), FP = 1 (item 1), FN = 1 (item 3), TN = 1: P = R = 2/3, F1 = 2/3; accuracy 3/5.
    result = compute_metric("f1", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    assert result == pytest.approx({"f1": 200 / 3, "accuracy": 60.0})
    with pytest.raises(ValueError, match="binary"):
        compute_metric("f1", [0, 1, 2], [0, 1, 2])


def test_matthews_correlation() -> None:
    # Same confusion as above: (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 1 / sqrt(36).
    assert compute_metric("matthews", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx({"matthews": 100 / 6})
    assert compute_metric("matthews", [0, 1, 0, 1], [0, 1, 0, 1])["matthews"] == pytest.approx(100.0)
    assert compute_metric("matthews", [1, 0, 1, 0], [0, 1, 0, 1])["matthews"] == pytest.approx(-100.0)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (the Spearman convention)."""
    order = values.argsort()
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):
        ranks[values == value] = ranks[values == value].mean()
    return ranks


def test_pearson_and_spearman_match_numpy_formulas() -> None:
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 5, size=50).round(1)  # STS-B-like scores, with ties
    preds = target + rng.normal(0, 1, size=50)
    result = compute_metric("pearson_spearman", preds, target)
    pearson = 100 * np.corrcoef(preds, target)[0, 1]
    spearman = 100 * np.corrcoef(_ranks(preds), _ranks(target))[0, 1]
    assert result["pearson"] == pytest.approx(pearson, rel=1e-5)
    assert result["spearman"] == pytest.approx(spearman, rel=1e-5)
    assert result["pearson_spearman"] == pytest.approx((pearson + spearman) / 2, rel=1e-5)


def test_spearman_with_ties_by_hand() -> None:
    # Ranks (1, 2.5, 2.5, 4) vs (1, 3, 2, 4): covariance 4.5, variances 4.5 and 5 → 4.5 / sqrt(22.5).
    result = compute_metric("pearson_spearman", np.array([[1.0], [2.0], [2.0], [3.0]]), [1.0, 3.0, 2.0, 4.0])
    assert result["spearman"] == pytest.approx(100 * 4.5 / math.sqrt(22.5), rel=1e-6)


def test_squad_exact_match_and_f1_with_normalisation() -> None:
    # "the cat" → "cat"; "a cat sat" → "cat sat": EM 0, P = 1, R = 1/2, F1 = 2/3.
    assert compute_metric("squad", {"1": "the cat"}, {"1": ["a cat sat"]}) == pytest.approx(
        {"exact_match": 0.0, "f1": 200 / 3}
    )
    # Case, punctuation and articles are ignored; the best of several gold answers counts.
    predictions = {"1": "The Cat!", "2": "Paris", "3": "in 1990"}
    references = {"1": ["a cat"], "2": ["London", "paris."], "3": ["1990 AD"]}
    # Example 3: common token "1990": P = 1/2, R = 1/2, F1 = 1/2.
    expected = {"exact_match": 200 / 3, "f1": 100 * (1 + 1 + 0.5) / 3}
    assert compute_metric("squad", predictions, references) == pytest.approx(expected)
    # A missing prediction counts as an empty (wrong) answer.
    assert compute_metric("squad", {}, {"1": ["cat"]}) == {"exact_match": 0.0, "f1": 0.0}


def test_perplexity_from_summed_nll() -> None:
    assert perplexity(10 * math.log(4), 10) == pytest.approx({"perplexity": 4.0, "nll": math.log(4)})
    assert compute_metric("perplexity", 5 * math.log(2), 5)["perplexity"] == pytest.approx(2.0)
    assert perplexity(1e6, 1)["perplexity"] == math.inf
    with pytest.raises(ValueError, match="at least one scored token"):
        perplexity(1.0, 0)


def test_summed_nll_shifts_and_skips_ignored_labels() -> None:
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]]))
    labels = torch.tensor([[0, 1, -100]])
    nll, count = summed_nll(logits, labels)
    # Position 0 predicts label 1 (p = 0.5); position 1 predicts -100 (skipped); position 2 predicts nothing.
    assert count == 1 and float(nll) == pytest.approx(math.log(2))


def test_headlines_and_unknown_metrics() -> None:
    assert METRICS["squad"].headline == "f1" and not METRICS["perplexity"].higher_is_better
    for name, info in METRICS.items():
        if name not in ("squad", "perplexity", "embedding_fidelity", "sts_spearman"):  # those take embeddings
            assert info.headline in compute_metric(name, [0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        compute_metric("bleu", [], [])
    with pytest.raises(ValueError, match="3 predictions but 2 references"):
        compute_metric("accuracy", [0, 1, 1], [0, 1])


def test_qqp_metric_gives_accuracy_and_f1_with_accuracy_as_headline() -> None:
    from ziplm.eval.metric_info import METRICS as INFO

    scores = compute_metric("accuracy_f1", torch.tensor([1, 0, 1, 1]), torch.tensor([1, 0, 0, 1]))
    assert scores == pytest.approx({"accuracy": 75.0, "f1": 80.0})  # precision 2/3, recall 1: F1 0.8
    assert INFO["accuracy_f1"].headline == "accuracy" and INFO["f1"].headline == "f1"
