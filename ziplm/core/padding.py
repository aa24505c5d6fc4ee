"""Cutting the all-padding tail off a right-padded batch.

Task features are padded to ``max_seq_length`` so that every batch has one shape (timing, calibration and
QA post-processing rely on it), but short texts then spend most of a training step on padding: BBC News
paragraphs fill ~70 of 128 positions. Columns that are padding in *every* row change nothing a masked
encoder computes for the real tokens, so training and scoring drop them per batch. Left-padded batches
(decoders) always end in a real token and are left as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def used_length(mask: torch.Tensor) -> int:
    """One past the last column of `mask` (batch, seq) holding a real token in any row (at least 1)."""
    columns = mask.bool().any(dim=0).nonzero()
    return max(1, int(columns[-1]) + 1) if len(columns) else 1


def trim_padding(batch: Mapping[str, torch.Tensor], mask_key: str = "attention_mask") -> dict[str, torch.Tensor]:
    """`batch` with every (batch, seq, ...) tensor cut to the used length of its attention mask.

    Tensors whose first two dimensions are not (batch, seq) — class labels, QA start/end positions — are
    kept whole; a batch without a mask is returned unchanged.
    """
    mask = batch.get(mask_key)
    if mask is None or mask.dim() != 2:
        return dict(batch)
    rows, seq = mask.shape
    keep = used_length(mask)
    if keep == seq:
        return dict(batch)
    return {
        k: v[:, :keep] if isinstance(v, torch.Tensor) and v.dim() >= 2 and v.shape[:2] == (rows, seq) else v
        for k, v in batch.items()
    }
