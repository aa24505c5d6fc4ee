"""Metrics: predictions and references in, a flat ``{name: float}`` dict out."""

from ziplm.eval.metrics import METRICS, MetricInfo, compute_metric, perplexity, summed_nll

__all__ = ["METRICS", "MetricInfo", "compute_metric", "perplexity", "summed_nll"]
