"""A fresh Lightning Trainer per stage, from the ``trainer`` config group (a Hydra ``_target_`` config).

The Trainer class is ``trainer._target_`` (default ``lightning.pytorch.Trainer``). Every key of the group is
a keyword argument of that class except ziplm's own (`ZIPLM_KEYS`), so ``+trainer.accumulate_grad_batches=4``
or any other Trainer argument reaches the Trainer (``ziplm.config.validate`` refuses unknown ones before a
run starts). ``trainer.callbacks`` is the ``callbacks`` group (name -> ``_target_`` config), so the run's
callbacks reach every stage's Trainer. The logger comes from ``ziplm.report.tracking.make_logger``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger

log = logging.getLogger(__name__)

TRAINER_TARGET = "lightning.pytorch.Trainer"
# Keys of the trainer group that ziplm reads itself; none of them is passed to the Trainer.
ZIPLM_KEYS = ("_target_", "batch_size", "eval_batch_size", "num_workers", "eval_precision", "callbacks")
# Set per stage by `make_trainer` from its arguments; the config cannot set them (validate refuses them).
RUNTIME_KEYS = ("default_root_dir", "logger", "enable_progress_bar")
# ziplm's defaults for a stage; a trainer key of the same name wins (e.g. +trainer.enable_model_summary=true).
STAGE_DEFAULTS: dict[str, Any] = {
    "enable_checkpointing": False,  # stages are saved as ziplm folders; resuming is per stage
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
}


def make_callbacks(configs: Mapping[str, Any] | None) -> list[Callback]:
    """The Lightning callbacks of a ``callbacks`` mapping (name -> ``_target_`` config), in its order.

    A null entry is skipped (``callbacks.lr_monitor=null`` turns one off).
    """
    from hydra.utils import instantiate

    if configs is not None and not isinstance(configs, Mapping):  # e.g. an unresolved "${callbacks}"
        raise TypeError(f"callbacks must be a mapping name -> _target_ config, got {configs!r} (resolve the config)")
    callbacks: list[Callback] = []
    for name, config in (configs or {}).items():
        if config is None:
            continue
        callback = instantiate(config, _convert_="all")
        if not isinstance(callback, Callback):
            raise TypeError(f"callbacks.{name} built a {type(callback).__name__}, not a Lightning Callback")
        callbacks.append(callback)
    return callbacks


def trainer_kwargs(trainer: Mapping[str, Any]) -> dict[str, Any]:
    """The Lightning keyword arguments of a trainer config: every set key except ziplm's own."""
    return {k: v for k, v in trainer.items() if k not in ZIPLM_KEYS and v is not None}


def make_trainer(
    trainer: Mapping[str, Any],
    root_dir: Path,
    logger: Logger | bool = False,
    max_epochs: float | None = None,
    show_progress: bool = True,
    validate: bool = False,
    callbacks: Sequence[Callback] = (),
) -> L.Trainer:
    """A Trainer for one stage. A fractional `max_epochs` trains on that fraction of one epoch.

    Evaluation normally runs outside the Trainer (``ziplm.eval.evaluate``); `validate` turns the
    in-loop validation of the module's evaluator on. `callbacks` are added to the configured ones
    (``trainer.callbacks``, i.e. the ``callbacks`` group), which every call builds afresh.
    """
    from hydra.utils import instantiate

    kwargs = {**STAGE_DEFAULTS, **trainer_kwargs(trainer)}
    if not validate:
        kwargs["limit_val_batches"] = 0
    if max_epochs is not None:
        kwargs["max_epochs"] = max(1, math.ceil(max_epochs))
        if max_epochs < 1:  # a fraction of one epoch
            kwargs["limit_train_batches"] = max_epochs
    stage_callbacks = [*make_callbacks(trainer.get("callbacks")), *callbacks]
    if not logger:  # LearningRateMonitor raises in a Trainer without a logger (logger=none): leave it out
        dropped = [c for c in stage_callbacks if isinstance(c, LearningRateMonitor)]
        if dropped:
            log.info("no logger: LearningRateMonitor left out of this stage's Trainer")
            stage_callbacks = [c for c in stage_callbacks if c not in dropped]
    if any(isinstance(c, ModelCheckpoint) for c in stage_callbacks):
        kwargs["enable_checkpointing"] = True  # a configured ModelCheckpoint needs it on
    config = {"_target_": str(trainer.get("_target_") or TRAINER_TARGET), **kwargs}  # nested _target_s too
    return instantiate(
        config,
        _convert_="all",
        default_root_dir=str(root_dir),
        logger=logger,
        callbacks=stage_callbacks,
        enable_progress_bar=show_progress,
        **kwargs,
    )


@contextmanager
def metrics_prefix(logger: Any, prefix: str) -> Iterator[None]:
    """Log this stage's training metrics under their own names (``<prefix>-train/loss``): every stage's
    fresh Trainer counts its steps from 0, so without a prefix the stages' curves would overlap on one chart.
    Loggers without a prefix (or no logger) are left as they are."""
    if not logger or isinstance(logger, bool) or not hasattr(logger, "_prefix"):
        yield
        return
    before = logger._prefix
    logger._prefix = prefix
    try:
        yield
    finally:
        logger._prefix = before
