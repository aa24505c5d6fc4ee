"""TaskMetric: rows arriving in any order, some twice (a padding sampler), score as the ordered split."""

from __future__ import annotations

from types import SimpleNamespace

import datasets
import pytest
import torch

from ziplm.data.spec import TaskSpec
from ziplm.eval.evaluate import Evaluator
from ziplm.eval.metrics import summed_nll
from ziplm.eval.task_metric import TaskMetric


def _spec(kind: str, metric: str) -> TaskSpec:
    keys = {"text_keys": ["text"]} if kind == "lm" else {"text_keys": ["text"], "label_key": "label"}
    return TaskSpec.from_mapping({"name": "t", "kind": kind, "metric": metric, "num_labels": 3, "stride": 64, **keys})


def _features(n: int) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"input_ids": [[1, 2]] * n})


def _shuffled_with_repeats(n: int) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    order = torch.cat([order, order[:4]])  # 4 rows seen twice
    return list(order.split(5))


@pytest.mark.parametrize(("kind", "metric"), [("classification", "accuracy"), ("regression", "pearson_spearman")])
def test_classification_and_regression_match_the_ordered_evaluator(kind: str, metric: str) -> None:
    n = 23
    width = 3 if kind == "classification" else 1
    logits = torch.randn(n, width)
    labels = torch.randint(0, 3, (n,)) if kind == "classification" else torch.randn(n)
    task = _spec(kind, metric)
    ordered = Evaluator(task, None, _features(n))  # type: ignore[arg-type]
    ordered.update({"labels": labels}, SimpleNamespace(logits=logits))
    metric_ = TaskMetric(task, None, _features(n))  # type: ignore[arg-type]
    for rows in _shuffled_with_repeats(n):
        metric_.update(rows, {"labels": labels[rows]}, SimpleNamespace(logits=logits[rows]))
    assert metric_.compute() == ordered.compute()


def test_language_model_perplexity_sums_every_row_once() -> None:
    n, seq, vocab = 9, 6, 11
    logits = torch.randn(n, seq, vocab)
    labels = torch.randint(0, vocab, (n, seq))
    labels[:, :2] = -100  # context positions are not scored
    task = _spec("lm", "perplexity")
    nll, tokens = summed_nll(logits, labels)
    expected = torch.exp(nll / tokens).item()
    metric = TaskMetric(task, None, _features(n))  # type: ignore[arg-type]
    for rows in _shuffled_with_repeats(n):
        metric.update(rows, {"labels": labels[rows]}, SimpleNamespace(logits=logits[rows]))
    assert metric.compute()["perplexity"] == pytest.approx(expected, rel=1e-6)


def test_a_missing_row_is_an_error_not_a_smaller_split() -> None:
    task = _spec("classification", "accuracy")
    metric = TaskMetric(task, None, _features(5))  # type: ignore[arg-type]
    metric.update(
        torch.arange(4), {"labels": torch.zeros(4, dtype=torch.long)}, SimpleNamespace(logits=torch.randn(4, 3))
    )
    with pytest.raises(ValueError, match="saw 4 of 5 rows"):
        metric.compute()
