"""Everything a pruning run needs, built and validated before any expensive work starts."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from omegaconf import DictConfig

from ziplm.config.settings import RunSettings, TeacherSettings
from ziplm.config.validate import validate_config
from ziplm.core.distill import DistillSettings, DistillWeights
from ziplm.data.builtin import train_texts
from ziplm.data.features import build_features
from ziplm.data.sources import load_splits
from ziplm.data.spec import TaskSpec
from ziplm.latency.measure import Environment
from ziplm.models.build import ModelSpec, build_tokenizer
from ziplm.pipelines.common import task_head
from ziplm.pipelines.outputs import run_dir
from ziplm.pipelines.placement import eval_precision, run_device
from ziplm.pruning.levels_database import DatabaseSettings, PrunerSettings
from ziplm.pruning.methods import Method, method
from ziplm.pruning.targets import SearchSettings


@dataclass
class RunContext:
    """The flattened, validated run: typed settings (`RunSettings`) plus the loaded data."""

    cfg: DictConfig
    out: Path
    settings: RunSettings
    spec: ModelSpec
    task: TaskSpec
    env: Environment
    trainer: dict[str, Any]
    logger: dict[str, Any]
    tokenizer: Any
    train_examples: datasets.Dataset
    train_features: datasets.Dataset
    eval_examples: datasets.Dataset
    eval_features: datasets.Dataset

    @functools.cached_property
    def device(self) -> torch.device:
        """Where the teacher, members, calibration and evaluation live (the trainer's accelerator)."""
        return run_device(self.trainer)

    @property
    def eval_precision(self) -> str:
        """One declared precision for the dense row and every member (``trainer.eval_precision``)."""
        return eval_precision(self.trainer)

    @property
    def schedule(self) -> str:
        """oneshot | gradual (``schedule.name``)."""
        return self.settings.schedule

    @property
    def member_dtype(self) -> str:
        return self.settings.member_dtype

    @property
    def pruner(self) -> PrunerSettings:
        return self.settings.pruner

    @property
    def search(self) -> SearchSettings:
        return self.settings.search

    @property
    def distill(self) -> DistillSettings:
        return self.settings.distill

    @property
    def teacher_settings(self) -> TeacherSettings:
        return self.settings.teacher

    @property
    def targets(self) -> list[float]:
        return [float(t) for t in self.search.targets]

    @property
    def database_settings(self) -> DatabaseSettings:
        return self.settings.database

    @property
    def method(self) -> Method:
        """The structure-selection method (``pruner.method``) from the registry."""
        return method(self.database_settings.method)

    @property
    def distill_weights(self) -> DistillWeights:
        return self.distill.weights


def build_context(cfg: DictConfig) -> RunContext:
    """Validate the config and load the data; fails fast with a clear message on bad input."""
    validate_config(cfg)  # the CLI ran it already; a run started from Python gets the same checks
    settings = RunSettings.from_config(cfg)
    task = settings.task
    task_head(cfg)
    env = settings.hardware
    env.validate()
    run_device(settings.trainer)  # a GPU trainer on a machine without one fails here, before any data
    spec = settings.model
    tokenizer = build_tokenizer(spec, cache_dir=str(cfg.cache_dir), corpus=train_texts)
    splits = load_splits(task, seed=int(cfg.seed))
    train, evaluation = splits[task.train_split], splits[task.eval_split]
    return RunContext(
        cfg=cfg,
        out=run_dir(cfg),
        settings=settings,
        spec=spec,
        task=task,
        env=env,
        trainer=settings.trainer,
        logger=settings.logger,
        tokenizer=tokenizer,
        train_examples=train,
        train_features=build_features(train, tokenizer, task, train=True),
        eval_examples=evaluation,
        eval_features=build_features(evaluation, tokenizer, task, train=False),
    )
