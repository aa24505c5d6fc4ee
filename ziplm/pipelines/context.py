"""Everything a pruning run needs, built and validated before any expensive work starts."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from omegaconf import DictConfig

from ziplm.config.validate import validate_config
from ziplm.core.distill import DistillWeights
from ziplm.data.builtin import train_texts
from ziplm.data.features import build_features
from ziplm.data.sources import load_splits
from ziplm.data.spec import TaskSpec
from ziplm.latency.measure import Environment
from ziplm.models.build import ModelSpec, build_tokenizer
from ziplm.pipelines.common import environment, model_spec, task_head, to_dict
from ziplm.pipelines.outputs import run_dir
from ziplm.pipelines.placement import eval_precision, run_device
from ziplm.pruning.levels_database import DatabaseSettings
from ziplm.pruning.methods import Method, method


@dataclass
class RunContext:
    """The flattened, validated run: typed settings plus the loaded data."""

    cfg: DictConfig
    out: Path
    spec: ModelSpec
    task: TaskSpec
    env: Environment
    schedule: dict[str, Any]
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
    def member_dtype(self) -> str:
        return str(self.schedule["member_dtype"])

    @property
    def targets(self) -> list[float]:
        return [float(t) for t in self.schedule["targets"]]

    @property
    def database_settings(self) -> DatabaseSettings:
        return DatabaseSettings.from_schedule(self.schedule, int(self.cfg.seed))

    @property
    def method(self) -> Method:
        """The structure-selection method (``schedule.method``) from the registry."""
        return method(self.database_settings.method)

    @property
    def distill_weights(self) -> DistillWeights:
        s = self.schedule
        return DistillWeights(
            task=float(s["distill_task"]),
            logit=float(s["distill_logit"]),
            token=float(s["distill_token"]),
            temperature=float(s["distill_temperature"]),
        )


def build_context(cfg: DictConfig) -> RunContext:
    """Validate the config and load the data; fails fast with a clear message on bad input."""
    validate_config(cfg)  # the CLI ran it already; a run started from Python gets the same checks
    schedule = to_dict(cfg.schedule)
    task_fields = to_dict(cfg.task)
    task = TaskSpec.from_mapping(task_fields)
    task_head(cfg)
    env = environment(cfg)
    env.validate()
    run_device(to_dict(cfg.trainer))  # a GPU trainer on a machine without one fails here, before any data
    spec = model_spec(cfg)
    tokenizer = build_tokenizer(spec, cache_dir=str(cfg.cache_dir), corpus=train_texts)
    splits = load_splits(task, seed=int(cfg.seed))
    train, evaluation = splits[task.train_split], splits[task.eval_split]
    return RunContext(
        cfg=cfg,
        out=run_dir(cfg),
        spec=spec,
        task=task,
        env=env,
        schedule=schedule,
        trainer=to_dict(cfg.trainer),
        logger=to_dict(cfg.logger),
        tokenizer=tokenizer,
        train_examples=train,
        train_features=build_features(train, tokenizer, task, train=True),
        eval_examples=evaluation,
        eval_features=build_features(evaluation, tokenizer, task, train=False),
    )
