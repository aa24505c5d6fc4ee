"""Task metrics: one function from predictions and references to a flat dict of floats.

Scale conventions (as the papers and the GLUE leaderboard print them):

- accuracy, F1, SQuAD exact match / F1: percent, 0-100.
- Matthews, Pearson and Spearman correlations: also x100 (GLUE prints CoLA MCC 52.1, STS-B 85.8),
  so they range over -100..100.
- perplexity: exp of the mean per-token negative log-likelihood in nats (no scaling); ``nll`` is that
  mean. Lower is better, the only such metric.

Computed with ``torchmetrics.functional`` (exact: no sampling, no state).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torchmetrics.functional as tmf
from torchmetrics.functional.text import squad as squad_score

from ziplm.eval.embedding import fidelity, sts_spearman
from ziplm.eval.metric_info import METRICS, MetricInfo

__all__ = ["METRICS", "MetricInfo", "compute_metric", "perplexity", "summed_nll"]

IGNORE_INDEX = -100


def _class_ids(predictions: Any) -> torch.Tensor:
    """Class ids from ids (N,) or logits/probabilities (N, C)."""
    tensor = torch.as_tensor(predictions)
    if tensor.ndim == 2:
        tensor = tensor.argmax(dim=-1)
    return tensor.long().reshape(-1)


def _scores(values: Any) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64).reshape(-1)


def _num_classes(*tensors: torch.Tensor) -> int:
    return max(2, *(int(t.max()) + 1 for t in tensors if t.numel()))


def _classification(name: str, predictions: Any, references: Any) -> dict[str, float]:
    preds, target = _class_ids(predictions), _class_ids(references)
    if preds.shape != target.shape:
        raise ValueError(f"{preds.numel()} predictions but {target.numel()} references")
    if preds.numel() == 0:
        raise ValueError(f"metric {name!r} of no examples")
    num_classes = _num_classes(preds, target)
    accuracy = float(tmf.accuracy(preds, target, task="multiclass", num_classes=num_classes, average="micro"))
    if name == "accuracy":
        return {"accuracy": 100 * accuracy}
    if name in ("f1", "accuracy_f1"):  # binary F1 of class 1 (GLUE's MRPC/QQP convention)
        if num_classes > 2:
            raise ValueError(f"metric 'f1' is binary but labels go up to {num_classes - 1}")
        return {
            "f1": 100 * float(tmf.classification.binary_f1_score(preds, target)),
            "accuracy": 100 * accuracy,
        }
    mcc = tmf.matthews_corrcoef(preds, target, task="multiclass", num_classes=num_classes)
    return {"matthews": 100 * float(mcc)}


def _correlations(predictions: Any, references: Any) -> dict[str, float]:
    preds, target = _scores(predictions), _scores(references)
    if preds.shape != target.shape or preds.numel() < 2:
        raise ValueError(f"correlations need >= 2 paired values, got {preds.numel()} and {target.numel()}")
    pearson = 100 * float(tmf.pearson_corrcoef(preds, target))
    spearman = 100 * float(tmf.spearman_corrcoef(preds, target))
    return {"pearson": pearson, "spearman": spearman, "pearson_spearman": (pearson + spearman) / 2}


def _squad(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    if not references:
        raise ValueError("metric 'squad' of no examples")
    ids = list(references)
    preds = [{"id": i, "prediction_text": predictions.get(i, "")} for i in ids]
    target = [
        {"id": i, "answers": {"text": list(references[i]), "answer_start": [0] * len(references[i])}} for i in ids
    ]
    scores = squad_score(preds, target)
    return {"exact_match": float(scores["exact_match"]), "f1": float(scores["f1"])}


def perplexity(nll_sum: float, num_tokens: int) -> dict[str, float]:
    """Perplexity from a summed negative log-likelihood (nats) over `num_tokens` scored tokens.

    Returns:
        ``{"perplexity": exp(nll_sum / num_tokens), "nll": nll_sum / num_tokens}``.
    """
    if num_tokens < 1:
        raise ValueError(f"perplexity needs at least one scored token, got {num_tokens}")
    mean = float(nll_sum) / num_tokens
    try:
        value = math.exp(mean)
    except OverflowError:
        value = math.inf
    return {"perplexity": value, "nll": mean}


def compute_metric(name: str, predictions: Any, references: Any) -> dict[str, float]:
    """Score predictions against references.

    Args:
        name: ``accuracy`` | ``f1`` | ``matthews`` | ``pearson_spearman`` | ``squad`` | ``perplexity``.
        predictions: Class ids (N,) or logits (N, C) for the classification metrics; scores (N,) or
            (N, 1) for ``pearson_spearman``; ``{id: answer text}`` for ``squad``; the summed NLL in
            nats (a float) for ``perplexity``.
        references: Class ids (N,); gold scores (N,); ``{id: [gold answer texts]}`` (SQuAD ids missing
            from `predictions` count as empty answers); the number of scored tokens.

    Returns:
        ``accuracy``: {accuracy}; ``f1`` and ``accuracy_f1`` (whose headline is accuracy): {f1, accuracy};
        ``matthews``: {matthews};
        ``pearson_spearman``: {pearson, spearman, pearson_spearman (their mean)}; ``squad``:
        {exact_match, f1}; ``perplexity``: {perplexity, nll}; ``embedding_fidelity`` (predictions: student
        embeddings (n, d), references: the dense model's): {mean_cosine, pairwise_spearman, nn_top1, nn_top<k>};
        ``sts_spearman`` (predictions: a (first, second) pair of embeddings, references: gold scores).
        Scales are in the module docstring.

    Raises:
        ValueError: unknown metric, mismatched lengths, or no examples.
    """
    if name in ("accuracy", "f1", "accuracy_f1", "matthews"):
        return _classification(name, predictions, references)
    if name == "pearson_spearman":
        return _correlations(predictions, references)
    if name == "squad":
        return _squad(predictions, references)
    if name == "perplexity":
        return perplexity(float(predictions), int(references))
    if name == "embedding_fidelity":  # student embeddings (n, d) vs the dense model's (n, d)
        return fidelity(torch.as_tensor(predictions), torch.as_tensor(references))
    if name == "sts_spearman":  # (first, second) pair embeddings vs gold similarity scores
        first, second = predictions
        return sts_spearman(torch.as_tensor(first), torch.as_tensor(second), torch.as_tensor(references))
    raise ValueError(f"unknown metric {name!r}; known: {sorted(METRICS)}")


def summed_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed causal-LM negative log-likelihood and scored-token count of one batch.

    Position t predicts label t + 1 (the HF shift); labels equal to -100 are not scored. Summing (not
    averaging per batch) keeps the perplexity exact when windows score different numbers of tokens.

    Args:
        logits: Shape (B, T, V).
        labels: Shape (B, T), -100 on context and padding.

    Returns:
        (summed NLL in nats as a 0-d float64 tensor, number of scored tokens).
    """
    # fp32 log-softmax (fp64 would double a (B*T, 50257) buffer); the per-batch sum is returned in fp64.
    shifted_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shifted_labels = labels[:, 1:].reshape(-1)
    nll = torch.nn.functional.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return nll.double(), int((shifted_labels != IGNORE_INDEX).sum())
