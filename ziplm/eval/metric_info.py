"""How each task metric is reported, without importing torch or torchmetrics (reports read it: fast)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is reported: the key of its headline number and the direction that is better."""

    headline: str
    higher_is_better: bool = True


METRICS: dict[str, MetricInfo] = {
    "accuracy": MetricInfo("accuracy"),
    "f1": MetricInfo("f1"),
    "accuracy_f1": MetricInfo("accuracy"),  # QQP: accuracy is the papers' headline, F1 GLUE's other number
    "matthews": MetricInfo("matthews"),
    "pearson_spearman": MetricInfo("pearson_spearman"),
    "squad": MetricInfo("f1"),
    "perplexity": MetricInfo("perplexity", higher_is_better=False),
    # sentence embeddings (ziplm.eval.embedding): fidelity to the dense model on 0-1, STS x100
    "embedding_fidelity": MetricInfo("mean_cosine"),
    "sts_spearman": MetricInfo("sts_spearman"),
}
