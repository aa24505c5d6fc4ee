"""Distillation losses (spec §6): logit KL with temperature and layer-wise token distillation.

ZipLM never removes layers, so layer l of the student always maps to layer l of the teacher, and
every layer's output hidden state can be matched token by token. Layer-dropping baselines match only
(student layer, teacher layer) pairs instead: see `paired_hidden_states`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DistillWeights:
    """λ_task·L_task + λ_logit·KL·T² + λ_token·L_token (defaults: spec §6, ours)."""

    task: float = 0.0
    logit: float = 1.0
    token: float = 1.0
    temperature: float = 2.0

    def __post_init__(self) -> None:
        if min(self.task, self.logit, self.token) < 0 or self.temperature <= 0:
            raise ValueError(f"distillation weights must be >= 0 and temperature > 0, got {self}")
        if self.task == self.logit == self.token == 0:
            raise ValueError("all distillation weights are 0: nothing would be trained")


def token_distillation_loss(
    student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor], mask: torch.Tensor | None
) -> torch.Tensor:
    """Mean over layers and non-padding tokens of the per-token MSE between hidden states.

    Args:
        student_hidden: per layer (batch, seq, hidden) — layer outputs (embeddings excluded).
        teacher_hidden: the teacher's, same shapes.
        mask: (batch, seq) 1 for real tokens; None means all tokens count.
    """
    if len(student_hidden) != len(teacher_hidden):
        raise ValueError(f"student has {len(student_hidden)} hidden states, teacher {len(teacher_hidden)}")
    losses = []
    for s, t in zip(student_hidden, teacher_hidden, strict=True):
        per_token = (s.float() - t.float()).pow(2).mean(dim=-1)  # (batch, seq)
        if mask is None:
            losses.append(per_token.mean())
        else:
            m = mask.to(per_token.dtype)
            losses.append((per_token * m).sum() / m.sum().clamp_min(1.0))
    return torch.stack(losses).mean()


def paired_hidden_states(
    student_hidden: Sequence[torch.Tensor],
    teacher_hidden: Sequence[torch.Tensor],
    pairs: Sequence[tuple[int, int]] | None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The layer outputs to match: all layers one to one (None), or only the given (student, teacher) pairs.

    A layer-dropping student keeping teacher layers ``keep`` pairs its layer i with teacher layer
    ``keep[i]`` (a shorter model), or layer ``keep[i]`` with itself (dropped layers kept as identities,
    whose repeated hidden states are then left out).

    Raises:
        ValueError: an empty pair list, or a layer index outside either model.
    """
    if pairs is None:
        return list(student_hidden), list(teacher_hidden)
    if not pairs:
        raise ValueError("layer pairs for token distillation are empty; pass None to match every layer")
    for s, t in pairs:
        if not (0 <= s < len(student_hidden) and 0 <= t < len(teacher_hidden)):
            raise ValueError(
                f"layer pair ({s}, {t}) is outside the student's {len(student_hidden)} / "
                f"teacher's {len(teacher_hidden)} layers"
            )
    return [student_hidden[s] for s, _ in pairs], [teacher_hidden[t] for _, t in pairs]


def logit_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(softmax(z_t/T) ‖ softmax(z_s/T)) · T², averaged over positions (masked for token-level logits).

    Args:
        student_logits: (..., classes); (batch, classes) for classification, (batch, seq, vocab) for LM,
            (batch, seq) for a QA start/end distribution over positions.
        teacher_logits: same shape.
        mask: optional (batch, seq) mask over the positions of token-level logits.
    """
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1) * temperature**2
    if mask is None or kl.dim() < 2:
        return kl.mean()
    m = mask.to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp_min(1.0)
