"""Distillation losses (spec §6): logit KL with temperature (MSE for regression outputs) and layer-wise
token distillation.

ZipLM never removes layers, so layer l of the student always maps to layer l of the teacher, and
every layer's output hidden state can be matched token by token. Layer-dropping baselines match only
(student layer, teacher layer) pairs instead: see `paired_hidden_states`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ziplm.core.settings import DistillSettings as DistillSettings  # re-exported: their home is torch-free
from ziplm.core.settings import DistillWeights as DistillWeights


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
    """KL(softmax(z_t/T) ‖ softmax(z_s/T)) · T², averaged over the distributions (real ones only).

    Args:
        student_logits: (..., classes); (batch, classes) for classification, (batch, seq, vocab) for LM,
            (batch, seq) for a QA start/end distribution over positions.
        teacher_logits: same shape.
        mask: optional (batch, seq), 1 for real tokens. With (batch, seq, vocab) logits it weights the
            per-position KLs (padded positions do not count). With (batch, seq) logits the softmax runs
            over positions, so padded positions are removed from both distributions before the KL
            (a row with no real position is left out of the mean).

    Raises:
        ValueError: mismatched shapes, or a mask that fits neither layout.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)}")
    z_s, z_t = student_logits.float() / temperature, teacher_logits.float() / temperature
    if mask is not None and mask.shape == z_s.shape:
        return _positions_kl(z_s, z_t, mask.bool()) * temperature**2
    log_p_s, log_p_t = F.log_softmax(z_s, dim=-1), F.log_softmax(z_t, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1) * temperature**2
    if mask is None:
        return kl.mean()
    if mask.shape != kl.shape:
        raise ValueError(
            f"mask {tuple(mask.shape)} fits neither the logits {tuple(z_s.shape)} (a distribution over "
            f"positions) nor their positions {tuple(kl.shape)}"
        )
    m = mask.to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp_min(1.0)


def _positions_kl(z_s: torch.Tensor, z_t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(p_t ‖ p_s), both softmaxes taken over the kept positions of the row only."""
    rows = keep.any(dim=-1)
    keep = keep | ~rows.unsqueeze(-1)  # an all-padding row: keep it finite, then drop it from the mean
    log_p_s = F.log_softmax(z_s.masked_fill(~keep, -torch.inf), dim=-1).masked_fill(~keep, 0.0)
    log_p_t = F.log_softmax(z_t.masked_fill(~keep, -torch.inf), dim=-1).masked_fill(~keep, 0.0)
    p_t = log_p_t.exp().masked_fill(~keep, 0.0)
    kl = (p_t * (log_p_t - log_p_s)).sum(dim=-1)
    r = rows.to(kl.dtype)
    return (kl * r).sum() / r.sum().clamp_min(1.0)


def regression_distillation_loss(student_outputs: torch.Tensor, teacher_outputs: torch.Tensor) -> torch.Tensor:
    """MSE between the student's and the teacher's real-valued outputs (e.g. STS-B scores, (batch, 1)).

    A regression head has a single logit, over which a softmax is constant 1 and the KL always 0, so the
    output is distilled as a value instead (no temperature: there is no distribution to soften).
    """
    if student_outputs.shape != teacher_outputs.shape:
        raise ValueError(f"student outputs {tuple(student_outputs.shape)} vs teacher {tuple(teacher_outputs.shape)}")
    return F.mse_loss(student_outputs.float(), teacher_outputs.float())


# Float attributes some attention classes read their dropout from instead of an nn.Dropout (OPT, Llama).
_DROPOUT_ATTRIBUTES = ("dropout", "attention_dropout")


def set_dropout(model: nn.Module, p: float) -> Callable[[], None]:
    """Set every dropout of `model` to `p` — its ``nn.Dropout`` modules and the float dropout attributes some
    attention classes use — and return a function that puts the original values back.

    Distillation of a student that must reproduce its teacher (a sentence embedder) trains without dropout
    (`DistillSettings.dropout`); the member saved afterwards keeps the model's own dropout.
    """
    if not 0 <= p < 1:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    saved: list[tuple[object, str, float]] = []
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            saved.append((module, "p", module.p))
            module.p = p
        for name in _DROPOUT_ATTRIBUTES:
            value = getattr(module, name, None)
            if isinstance(value, float) and not isinstance(module, nn.Dropout):
                saved.append((module, name, value))
                setattr(module, name, p)

    def restore() -> None:
        for module, name, value in saved:
            setattr(module, name, value)

    return restore
