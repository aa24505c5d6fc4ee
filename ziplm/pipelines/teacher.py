"""The dense teacher: fine-tuned once per model × task × recipe, cached, and reused by later runs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
import transformers

from ziplm.config.settings import TeacherSettings
from ziplm.lit.data import TaskDataModule
from ziplm.lit.distributed import barrier, is_main
from ziplm.lit.module import ZipLMModule
from ziplm.lit.trainer import make_trainer
from ziplm.models.build import build_model, resolve_source
from ziplm.pipelines.common import task_head
from ziplm.pipelines.context import RunContext

__all__ = ["TeacherSettings", "load_or_train_teacher", "teacher_dir"]
_HEAD_ARCHITECTURE_SUFFIX = {"classification": "ForSequenceClassification", "qa": "ForQuestionAnswering"}


def check_teacher_head(ctx: RunContext) -> None:
    """Refuse a local checkpoint whose task head cannot serve this task (before any training)."""
    source = ctx.spec.source
    if source == "scratch" or not Path(resolve_source(source)).is_dir():
        return
    config = transformers.AutoConfig.from_pretrained(resolve_source(source))
    head = task_head(ctx.cfg)
    architectures = list(getattr(config, "architectures", None) or [])
    suffix = _HEAD_ARCHITECTURE_SUFFIX.get(head)
    has_head = any(a.endswith(tuple(_HEAD_ARCHITECTURE_SUFFIX.values())) for a in architectures)
    if has_head and suffix and not any(a.endswith(suffix) for a in architectures):
        raise ValueError(f"model {source} has a {architectures} head, but task {ctx.task.name!r} needs *{suffix}")
    labels = len(getattr(config, "id2label", {}) or {})
    if head == "classification" and has_head and labels != ctx.task.num_labels:
        raise ValueError(
            f"model {source} classifies into {labels} labels but task {ctx.task.name!r} has "
            f"{ctx.task.num_labels}: its head does not match the task"
        )


def _recipe_key(ctx: RunContext) -> str:
    recipe = {
        "model": ctx.spec.__dict__,
        "task": ctx.task.__dict__,
        "epochs": ctx.teacher_settings.epochs,
        "lr": ctx.teacher_settings.learning_rate,
        "batch": ctx.trainer["batch_size"],
        "seed": int(ctx.cfg.seed),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]


def head_kwargs(ctx: RunContext) -> dict[str, Any]:
    if task_head(ctx.cfg) == "classification" and ctx.task.num_labels:
        return {"num_labels": int(ctx.task.num_labels)}
    return {}


def teacher_dir(ctx: RunContext) -> Path:
    return Path(str(ctx.cfg.cache_dir)) / "teachers" / f"{ctx.spec.name}-{ctx.task.name}-{_recipe_key(ctx)}"


def load_or_train_teacher(ctx: RunContext, logger: Any = False) -> tuple[Any, bool]:
    """The fine-tuned dense model for this task; returns (model, came_from_cache)."""
    folder = teacher_dir(ctx)
    head = task_head(ctx.cfg)
    if (folder / "config.json").is_file():
        return _load_cached(folder).to(ctx.device).eval(), True
    check_teacher_head(ctx)
    model: Any = build_model(ctx.spec, head, **head_kwargs(ctx))
    epochs = float(ctx.teacher_settings.epochs)
    if epochs > 0:
        module = ZipLMModule(
            model,
            learning_rate=float(ctx.teacher_settings.learning_rate),
        )
        data = TaskDataModule(
            ctx.train_features, None, int(ctx.trainer["batch_size"]), int(ctx.trainer["eval_batch_size"])
        )
        make_trainer(ctx.trainer, ctx.out / "teacher", logger=logger, max_epochs=epochs).fit(module, datamodule=data)
    if is_main():  # every rank trained the same weights; one writes them
        tmp = folder.with_name(folder.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        ctx.tokenizer.save_pretrained(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    barrier()
    return model.to(ctx.device).eval(), False


def _load_cached(folder: Path) -> Any:
    config = transformers.AutoConfig.from_pretrained(folder)
    cls = getattr(transformers, config.architectures[0])
    return cls.from_pretrained(folder, dtype=torch.float32)  # the teacher is always fp32 (mixed precision autocasts)
