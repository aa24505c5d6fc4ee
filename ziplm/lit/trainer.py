"""A fresh Lightning Trainer per stage, from the flattened ``trainer`` config group (its logger comes from
``ziplm.report.tracking.make_logger``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import Logger

TRAINER_KEYS = (
    "accelerator", "devices", "num_nodes", "strategy", "precision", "max_epochs", "max_steps",
    "gradient_clip_val", "log_every_n_steps", "limit_train_batches", "limit_val_batches",
)  # fmt: skip


def make_trainer(
    trainer: dict[str, Any],
    root_dir: Path,
    logger: Logger | bool = False,
    max_epochs: float | None = None,
    show_progress: bool = True,
    validate: bool = False,
) -> L.Trainer:
    """A Trainer for one stage. A fractional `max_epochs` trains on that fraction of one epoch.

    Evaluation normally runs outside the Trainer (``ziplm.eval.evaluate``); `validate` turns the
    in-loop validation of the module's evaluator on.
    """
    kwargs = {k: trainer[k] for k in TRAINER_KEYS if trainer.get(k) is not None}
    if not validate:
        kwargs["limit_val_batches"] = 0
    if max_epochs is not None:
        kwargs["max_epochs"] = max(1, math.ceil(max_epochs))
        if max_epochs < 1:  # a fraction of one epoch
            kwargs["limit_train_batches"] = max_epochs
    return L.Trainer(
        default_root_dir=str(root_dir),
        logger=logger,
        enable_checkpointing=False,  # stages are saved as ziplm folders; resuming is per stage
        enable_progress_bar=show_progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )
