"""Metrics: predictions and references in, a flat ``{name: float}`` dict out.

The names below load lazily: `ziplm.eval.metric_info` (how metrics are reported) must stay importable
without torchmetrics, which `ziplm report` never needs.
"""

from typing import Any

__all__ = ["METRICS", "MetricInfo", "compute_metric", "perplexity", "summed_nll"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ziplm.eval import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module 'ziplm.eval' has no attribute {name!r}")
