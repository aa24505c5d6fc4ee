"""One distillation stage: a pruned student learns from the dense teacher for ``distill.epochs_per_stage``
epochs, with a fresh module, optimizer, LR schedule and Trainer (the student's shapes changed since the
last stage). Runs on the run's strategy: every rank trains, DDP keeps their weights equal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from lightning.pytorch.loggers import Logger
from torch import nn

from ziplm.core.distill import DistillSettings
from ziplm.core.embedding import Pooling
from ziplm.lit.data import TaskDataModule
from ziplm.lit.module import ZipLMModule
from ziplm.lit.trainer import make_trainer, metrics_prefix


def distill_stage(
    student: nn.Module,
    teacher: nn.Module,
    train_features: datasets.Dataset,
    settings: DistillSettings,
    trainer: Mapping[str, Any],
    root_dir: Path,
    device: torch.device,
    logger: Logger | bool = False,
    regression: bool = False,
    layer_pairs: Sequence[tuple[int, int]] | None = None,
    stage: str = "stage",
    pooling: Pooling | None = None,
) -> None:
    """Distill-finetune `student` in place (nothing happens for 0 epochs); it ends on `device`, in eval mode.

    `layer_pairs` restricts token distillation to (student layer, teacher layer) pairs (layer dropping);
    `regression` distills a one-value output with MSE (task kind ``regression``); `pooling` distills a
    sentence embedder's pooled embeddings (task kind ``embedding``, label-free).
    """
    epochs = float(settings.epochs_per_stage)
    if epochs <= 0:
        return
    module = ZipLMModule(
        student,
        teacher,
        settings.weights,
        learning_rate=float(settings.learning_rate),
        layer_pairs=layer_pairs,
        regression=regression,
        pooling=pooling,
        dropout=settings.dropout,
    )
    data = TaskDataModule(train_features, None, int(trainer["batch_size"]), int(trainer["eval_batch_size"]))
    with metrics_prefix(logger, stage):  # this stage's curves apart from the others'
        make_trainer(dict(trainer), root_dir, logger=logger, max_epochs=epochs).fit(module, datamodule=data)
    student.to(device).eval()  # Lightning's teardown leaves the trained module on the CPU
