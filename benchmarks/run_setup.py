"""What the benchmarks that time a real run share: the run's typed settings, its data and its cached teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ziplm.config.settings import RunSettings
from ziplm.data.builtin import train_texts
from ziplm.data.task_data import TaskData
from ziplm.models import build_tokenizer
from ziplm.pipelines.outputs import run_dir
from ziplm.pipelines.teacher import load_or_train_teacher


def settings_data_teacher(cfg: DictConfig) -> tuple[RunSettings, TaskData, Any, bool, Path]:
    """(settings, data, dense teacher on the CPU, whether it came from the cache, the run folder)."""
    settings, out = RunSettings.from_config(cfg), run_dir(cfg)
    tokenizer = build_tokenizer(settings.model, cache_dir=settings.cache_dir, corpus=train_texts)
    data = TaskData.load(settings.task, tokenizer, settings.seed)
    teacher, cached = load_or_train_teacher(settings, data, out, torch.device("cpu"))
    return settings, data, teacher, cached, out
