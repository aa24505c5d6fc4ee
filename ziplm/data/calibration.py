"""Calibration samples: a seeded random subset of the training features, model inputs only.

The pruning solver accumulates Hessians of layer inputs over these batches; it never needs targets, so
labels are left out (a model called with ``**batch`` then returns no loss and does no extra work).
"""

from __future__ import annotations

import warnings

import datasets
import torch

from ziplm.data.features import model_input_columns


def calibration_batches(
    train_features: datasets.Dataset, num_samples: int, batch_size: int, seed: int, with_labels: bool = False
) -> list[dict[str, torch.Tensor]]:
    """Draw `num_samples` training rows at random and batch their model inputs.

    Args:
        train_features: Tokenized training split (from ``build_features(..., train=True)``) with
            fixed-length ``input_ids`` of shape (L,) per row.
        num_samples: Rows to draw; if the split is smaller, all rows are used and a warning is issued.
        batch_size: Rows per batch (the last batch may be smaller).
        seed: Seed of the draw: the same seed gives the same rows in the same order.
        with_labels: Keep the ``labels`` column too (for scoring candidates by task loss).

    Returns:
        Batches ``{"input_ids", "attention_mask", ("token_type_ids")}``, each tensor of shape (b, L);
        no labels.

    Raises:
        ValueError: if `num_samples` or `batch_size` is < 1, the split is empty or has no ``input_ids``.
    """
    if num_samples < 1:
        raise ValueError(f"calibration needs num_samples >= 1, got {num_samples}")
    if batch_size < 1:
        raise ValueError(f"calibration needs batch_size >= 1, got {batch_size}")
    total = len(train_features)
    if total == 0:
        raise ValueError("cannot draw calibration samples from an empty training split")
    columns = model_input_columns(train_features)
    if with_labels:  # classification/LM use `labels`, QA `start_positions`/`end_positions`
        columns += [c for c in ("labels", "start_positions", "end_positions") if c in train_features.column_names]
    if "input_ids" not in columns:
        raise ValueError(f"training features have no input_ids column: {train_features.column_names}")
    if num_samples > total:
        warnings.warn(
            f"asked for {num_samples} calibration samples but the training split has {total} rows: using all",
            stacklevel=2,
        )
        num_samples = total
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:num_samples].tolist()
    rows = train_features.with_format("torch", columns=columns)
    batches = []
    for begin in range(0, num_samples, batch_size):
        chunk = rows[order[begin : begin + batch_size]]
        batches.append({column: chunk[column] for column in columns})
    return batches
