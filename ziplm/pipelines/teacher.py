"""The dense teacher: fine-tuned once per model × task × recipe, cached, and reused by later runs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
import transformers

from ziplm.config.settings import RunSettings, TeacherSettings
from ziplm.data.spec import TaskSpec
from ziplm.data.task_data import TaskData
from ziplm.lit.data import TaskDataModule
from ziplm.lit.distributed import barrier, is_main
from ziplm.lit.module import ZipLMModule
from ziplm.lit.trainer import make_trainer, metrics_prefix
from ziplm.models.build import ModelSpec, build_model, resolve_source
from ziplm.pipelines.common import head_for

__all__ = ["TeacherSettings", "check_teacher_head", "head_kwargs", "load_or_train_teacher", "teacher_dir"]
_HEAD_ARCHITECTURE_SUFFIX = {"classification": "ForSequenceClassification", "qa": "ForQuestionAnswering"}


def check_teacher_head(spec: ModelSpec, task: TaskSpec) -> None:
    """Refuse a local checkpoint whose task head cannot serve this task (before any training)."""
    source = spec.source
    if source == "scratch" or not Path(resolve_source(source)).is_dir():
        return
    config = transformers.AutoConfig.from_pretrained(resolve_source(source))
    head = head_for(task.name, task.kind)
    architectures = list(getattr(config, "architectures", None) or [])
    suffix = _HEAD_ARCHITECTURE_SUFFIX.get(head)
    has_head = any(a.endswith(tuple(_HEAD_ARCHITECTURE_SUFFIX.values())) for a in architectures)
    if has_head and suffix and not any(a.endswith(suffix) for a in architectures):
        raise ValueError(f"model {source} has a {architectures} head, but task {task.name!r} needs *{suffix}")
    labels = len(getattr(config, "id2label", {}) or {})
    if head == "classification" and has_head and labels != task.num_labels:
        raise ValueError(
            f"model {source} classifies into {labels} labels but task {task.name!r} has "
            f"{task.num_labels}: its head does not match the task"
        )


def _recipe_key(settings: RunSettings) -> str:
    recipe = {
        "model": settings.model.__dict__,
        "task": settings.task.__dict__,
        "epochs": settings.teacher.epochs,
        "lr": settings.teacher.learning_rate,
        "batch": settings.trainer["batch_size"],
        "seed": settings.seed,
    }
    if settings.task.kind == "embedding":  # the dense model as it is: no recipe but the model (and its seed)
        recipe = {"model": settings.model.__dict__, "seed": settings.seed, "kind": "embedding"}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]


def head_kwargs(task: TaskSpec) -> dict[str, Any]:
    if head_for(task.name, task.kind) == "classification" and task.num_labels:
        return {"num_labels": int(task.num_labels)}
    return {}


def teacher_dir(settings: RunSettings) -> Path:
    key = f"{settings.model.name}-{settings.task.name}-{_recipe_key(settings)}"
    return Path(settings.cache_dir) / "teachers" / key


def load_or_train_teacher(
    settings: RunSettings, data: TaskData, out: Path, device: torch.device, logger: Any = False
) -> tuple[Any, bool]:
    """The fine-tuned dense model for this task, on `device`; returns (model, came_from_cache).

    Every rank of a multi-process run trains (DDP); rank 0 writes the cache. For a sentence-embedding task
    (kind ``embedding``) the dense model itself is the teacher: users want their own embedder, only
    smaller, and there are no labels to fine-tune on; it is cached all the same, so members can name it
    as their dense reference (``embedding.json``) and a random test model is the same one at eval time.
    """
    folder = teacher_dir(settings)
    task = settings.task
    if (folder / "config.json").is_file():
        return _load_cached(folder).to(device).eval(), True
    check_teacher_head(settings.model, task)
    model: Any = build_model(settings.model, head_for(task.name, task.kind), **head_kwargs(task))
    epochs = 0.0 if task.kind == "embedding" else float(settings.teacher.epochs)
    if epochs > 0:
        module = ZipLMModule(model, learning_rate=float(settings.teacher.learning_rate))
        trainer = settings.trainer
        loader = TaskDataModule(data.train_features, None, int(trainer["batch_size"]), int(trainer["eval_batch_size"]))
        with metrics_prefix(logger, "teacher"):
            make_trainer(trainer, out / "teacher", logger=logger, max_epochs=epochs).fit(module, datamodule=loader)
    if is_main():  # every rank trained the same weights; one writes them
        tmp = folder.with_name(folder.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        data.tokenizer.save_pretrained(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    barrier()
    return model.to(device).eval(), False


def _load_cached(folder: Path) -> Any:
    config = transformers.AutoConfig.from_pretrained(folder)
    cls = getattr(transformers, config.architectures[0])
    return cls.from_pretrained(folder, dtype=torch.float32)  # the teacher is always fp32 (mixed precision autocasts)
