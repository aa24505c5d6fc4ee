"""A tiny run's pieces for the Lightning-phase tests: model, task, split and calibration batches.

Shared by the 1-process tests and the N-process script (which cannot import conftest): everything is
seeded, so every process builds the same model and data.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf

from ziplm.config.paths import CONF_DIR
from ziplm.data.builtin import train_texts
from ziplm.data.calibration import calibration_batches
from ziplm.data.features import build_features
from ziplm.data.sources import load_splits
from ziplm.data.spec import TaskSpec
from ziplm.models import ModelSpec, build_model
from ziplm.models.build import build_tokenizer
from ziplm.pruning.capture import projections


def tiny_run(task: str = "tiny-cls", head: str = "classification") -> tuple[Any, ...]:
    """(model, task spec, eval examples, eval features, calibration batches, projections by name)."""
    spec = ModelSpec(**_group("model", "tiny-bert"))
    task_spec = TaskSpec.from_mapping({**_group("task", task), "max_eval_samples": 45, "max_train_samples": 64})
    tokenizer = build_tokenizer(spec, cache_dir="/tmp/ziplm-test-cache", corpus=train_texts)
    splits = load_splits(task_spec, seed=0)
    examples = splits[task_spec.eval_split]
    features = build_features(examples, tokenizer, task_spec, train=False)
    train = build_features(splits[task_spec.train_split], tokenizer, task_spec, train=True)
    torch.manual_seed(0)
    kwargs = {"num_labels": int(task_spec.num_labels)} if head == "classification" else {}
    model = build_model(spec, head, **kwargs).eval()
    batches = calibration_batches(train, 40, 6, seed=0)  # 7 batches, the last one smaller
    modules = {f"{k[0]}.{k[1]}": m for k, m in projections(model, range(2)).items()}
    return model, task_spec, examples, features, batches, modules


def _group(group: str, option: str) -> dict[str, Any]:
    """One config file's own keys (its schema defaults left out), as the tests' fixed input."""
    values = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{option}.yaml"), resolve=True)
    assert isinstance(values, dict)
    return {str(k): v for k, v in values.items() if k != "defaults"}
