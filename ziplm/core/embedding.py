"""Sentence embeddings as pure tensor math: pooling token states into one vector per text, and the
label-free distortion between a pruned encoder's outputs and the dense encoder's.

A sentence-embedding model (sentence-transformers) is a bare encoder followed by a pooling step (mean over
real tokens, the [CLS] token, or a max) and often an L2 normalisation. Its users have raw text, not labels,
so the only signal a pruned member can be searched and distilled on is how far its embeddings moved from
the dense model's: `embedding_distortion` (SPDY's score) and `embedding_distillation_loss` (the
distillation term) measure that; both vanish for the dense model itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

POOLING_MODES = ("mean", "cls", "max")


@dataclass(frozen=True)
class Pooling:
    """How token states become one sentence vector: `mode` (mean | cls | max), then optionally L2 `normalize`."""

    mode: str = "mean"
    normalize: bool = False

    def __post_init__(self) -> None:
        if self.mode not in POOLING_MODES:
            raise ValueError(f"unknown pooling mode {self.mode!r}; known: {list(POOLING_MODES)}")


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, pooling: Pooling) -> torch.Tensor:
    """Sentence embeddings (batch, hidden) from token states (batch, seq, hidden), padding excluded.

    `mask` is the attention mask (batch, seq), 1 for real tokens (None: every token is real). Mean pooling
    averages real tokens only (sentence-transformers' formula, the count clamped at 1e-9); max pooling takes
    the maximum over real tokens; cls takes position 0. Computed in float32 whatever the states' dtype.
    """
    states = hidden.float()
    m = torch.ones(states.shape[:2], device=states.device) if mask is None else mask.to(states.device).float()
    if pooling.mode == "cls":
        out = states[:, 0]
    elif pooling.mode == "max":
        out = states.masked_fill(m.unsqueeze(-1) == 0, -1e9).max(dim=1).values
    else:
        out = (states * m.unsqueeze(-1)).sum(dim=1) / m.sum(dim=1, keepdim=True).clamp_min(1e-9)
    return F.normalize(out, p=2, dim=-1) if pooling.normalize else out


def cosine_distance(student: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """Mean over rows of 1 − cos(student_i, dense_i) for embeddings (n, d): 0 when the directions agree."""
    if student.shape != dense.shape:
        raise ValueError(f"student embeddings {tuple(student.shape)} vs dense {tuple(dense.shape)}")
    return (1 - F.cosine_similarity(student.float(), dense.float(), dim=-1, eps=1e-8)).mean()


def normalized_mse(student: torch.Tensor, dense: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Masked MSE of token states (batch, seq, hidden) divided by the dense states' mean square: a scale-free
    token term (1.0 = as far off as predicting zeros), so it adds to the cosine term without a tuned weight."""
    if student.shape != dense.shape:
        raise ValueError(f"student states {tuple(student.shape)} vs dense {tuple(dense.shape)}")
    s, d = student.float(), dense.float()
    per_token_error, per_token_energy = (s - d).pow(2).mean(dim=-1), d.pow(2).mean(dim=-1)
    if mask is None:
        return per_token_error.mean() / per_token_energy.mean().clamp_min(1e-12)
    m = mask.to(s.device).float()
    return (per_token_error * m).sum() / (per_token_energy * m).sum().clamp_min(1e-12)


def embedding_distortion(
    student_states: Sequence[torch.Tensor],
    dense_states: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor | None],
    pooling: Pooling,
) -> float:
    """SPDY's label-free score of a candidate: mean over batches of [mean (1 − cos) of pooled embeddings +
    normalised MSE of the last hidden states]. The dense states are computed once per search by the caller.

    Both terms are needed: the cosine is what users read off the embeddings, and the token term keeps the
    search from favouring candidates whose pooled vectors agree only because errors average out.
    """
    if not (len(student_states) == len(dense_states) == len(masks)) or not student_states:
        raise ValueError("embedding_distortion needs the same positive number of student/dense batches and masks")
    total = 0.0
    for s, d, m in zip(student_states, dense_states, masks, strict=True):
        cos = cosine_distance(pool(s, m, pooling), pool(d, m, pooling))
        total += float(cos + normalized_mse(s, d, m))
    return total / len(student_states)


def embedding_distillation_loss(student: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """Distillation term on pooled embeddings (batch, d): mean (1 − cos) + MSE of the embeddings divided by the
    dense ones' mean square (the direction, and the length for models that do not normalise)."""
    cos = cosine_distance(student, dense)
    scale = dense.float().pow(2).mean().clamp_min(1e-12)
    return cos + F.mse_loss(student.float(), dense.float()) / scale
