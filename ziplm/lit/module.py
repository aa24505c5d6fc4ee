"""Thin Lightning shell: fine-tune a model on its task, or distill a pruned student from the dense teacher.

Training only: evaluation is its own Lightning phase (``ziplm.lit.phases.evaluate``), run after a stage.

The networks are injected (any HF model); a fresh module + Trainer is made per stage, so no optimizer
state has to survive a shape change. Losses come from `ziplm.core.distill`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from ziplm.core.distill import (
    DistillWeights,
    logit_distillation_loss,
    paired_hidden_states,
    regression_distillation_loss,
    set_dropout,
    token_distillation_loss,
)
from ziplm.core.embedding import Pooling, embedding_distillation_loss, pool
from ziplm.core.padding import trim_padding

LABEL_KEYS = ("labels", "start_positions", "end_positions")


def _inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k not in LABEL_KEYS}


def _logit_pairs(
    student: Any, teacher: Any, mask: torch.Tensor | None
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Output distributions to match, each with the mask `logit_distillation_loss` needs for it.

    Class logits (batch, classes) take no mask; vocab logits (batch, seq, vocab) weight positions by it;
    QA start/end logits (batch, seq) are distributions over positions, so padding leaves both softmaxes.
    """
    if getattr(student, "start_logits", None) is not None:
        return [(student.start_logits, teacher.start_logits, mask), (student.end_logits, teacher.end_logits, mask)]
    return [(student.logits, teacher.logits, mask if student.logits.dim() == 3 else None)]


def _freeze_pooler(model: nn.Module) -> None:
    """Freeze HF's ``pooler`` (a tanh layer on [CLS]) of a sentence embedder: the embedding pools token
    states instead, so no loss reaches it, and DDP stops at the first step on trainable parameters that got
    no gradient. It keeps its dense weights, as a one-process fit (no gradient, no update) leaves them."""
    pooler = getattr(model, "pooler", None)
    if isinstance(pooler, nn.Module):
        pooler.requires_grad_(False)


class ZipLMModule(L.LightningModule):
    """Fine-tunes `model`; with a `teacher`, distills it (spec §6) with `weights`.

    Args:
        model: the network being trained (dense teacher-to-be, or pruned student).
        teacher: frozen dense model for distillation, or None for plain task fine-tuning.
        weights: loss weights λ_task, λ_logit, λ_token and temperature (required with a teacher).
        learning_rate: peak AdamW learning rate (linear warm-up then decay, restarted every stage).
        layer_pairs: (student layer, teacher layer) pairs for token distillation; None matches every
            layer l to layer l (ZipLM keeps all layers), layer-dropping students pass their mapping.
        regression: the output is a real value (task kind ``regression``, e.g. STS-B): distilled with MSE,
            since a softmax over its single logit makes the KL identically 0. Said explicitly (from the
            task) rather than guessed from ``logits.shape[-1] == 1``, so that a one-logit output is never
            silently treated either way: without this flag it is refused.
        pooling: the student is a sentence embedder (task kind ``embedding``): there are no labels and no
            logits, so the λ_logit term matches the pooled embeddings instead (`embedding_distillation_loss`:
            1 − cos plus a scaled MSE), next to the usual layer-wise token term.
        dropout: the student's dropout probability during the fit (None: the model's own); put back after.
    """

    def __init__(
        self,
        model: nn.Module,
        teacher: nn.Module | None = None,
        weights: DistillWeights | None = None,
        learning_rate: float = 5e-5,
        warmup_fraction: float = 0.1,
        weight_decay: float = 0.0,
        layer_pairs: Sequence[tuple[int, int]] | None = None,
        regression: bool = False,
        pooling: Pooling | None = None,
        dropout: float | None = None,
    ) -> None:
        super().__init__()
        if teacher is not None and weights is None:
            raise ValueError("distillation needs DistillWeights")
        # The student trains, all of it: a student copied from a teacher that an earlier stage froze (every
        # layer-drop member is cut from the one teacher) would otherwise inherit requires_grad=False.
        self.model = model.requires_grad_(True)
        if pooling is not None:  # except an embedder's pooler (`_freeze_pooler`)
            _freeze_pooler(model)
        # Kept outside the module tree: not trained, not checkpointed, never switched to train mode.
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None else []
        self.weights = weights
        self.learning_rate, self.warmup_fraction, self.weight_decay = (
            learning_rate,
            warmup_fraction,
            weight_decay,
        )
        self.layer_pairs = list(layer_pairs) if layer_pairs is not None else None
        self.regression = regression
        self.pooling = pooling
        self.dropout = dropout

    def on_fit_start(self) -> None:
        self.model.train()  # stitched/loaded students arrive in eval mode (dropout off)
        self._restore_dropout = set_dropout(self.model, self.dropout) if self.dropout is not None else None
        # The teacher is shared with the rest of the run (evaluated, timed, stitched from): it visits this
        # process's device for the fit and goes back where it was afterwards. Never cast: mixed precision
        # autocasts its forward, and "*-true" half precisions are refused by the config validation.
        self._teacher_home = [next(t.parameters()).device for t in self._teacher]
        for teacher in self._teacher:
            teacher.to(self.device)

    def on_fit_end(self) -> None:
        restore = getattr(self, "_restore_dropout", None)
        if restore is not None:
            restore()
        for teacher, home in zip(self._teacher, getattr(self, "_teacher_home", []), strict=False):
            teacher.to(home)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        batch = trim_padding(batch)  # columns that are padding in every row cost time and change nothing
        if not self._teacher:
            loss = self.model(**batch).loss
            self.log("train/loss", loss, prog_bar=True)
            return loss
        assert self.weights is not None
        w = self.weights
        student = self.model(**batch, output_hidden_states=True)
        with torch.no_grad():
            teacher = self._teacher[0](**_inputs(batch), output_hidden_states=True)
        mask = batch.get("attention_mask")
        parts: dict[str, torch.Tensor] = {}
        if w.task:
            parts["task"] = student.loss
        if w.logit and self.pooling is not None:
            s_emb = pool(student.last_hidden_state, mask, self.pooling)
            parts["logit"] = embedding_distillation_loss(s_emb, pool(teacher.last_hidden_state, mask, self.pooling))
        elif w.logit:
            if self.regression:
                parts["logit"] = regression_distillation_loss(student.logits, teacher.logits)
            else:
                pairs = _logit_pairs(student, teacher, mask)
                if any(m is None and s.shape[-1] == 1 for s, _, m in pairs):  # class logits, one class
                    raise ValueError(
                        "the output has a single logit, whose softmax KL is always 0: a regression task must "
                        "distill its output with ZipLMModule(..., regression=True)"
                    )
                kl = [logit_distillation_loss(s, t, w.temperature, m) for s, t, m in pairs]
                parts["logit"] = torch.stack(kl).mean()
        if w.token:
            # hidden_states[0] is the embedding output; layer l's output is hidden_states[l + 1].
            pair = paired_hidden_states(student.hidden_states[1:], teacher.hidden_states[1:], self.layer_pairs)
            parts["token"] = token_distillation_loss(*pair, mask)
        scale = {"task": w.task, "logit": w.logit, "token": w.token}
        loss = sum(scale[name] * value for name, value in parts.items())
        assert isinstance(loss, torch.Tensor)
        self.log_dict({f"train/{k}": v.detach() for k, v in parts.items()})
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.warmup_fraction * total)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
