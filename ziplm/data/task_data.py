"""A task's data for one run: its tokenizer, and the training and evaluation splits as raw rows and as
tokenized features. Loaded once, before any expensive work; every phase reads from here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import datasets

from ziplm.data.features import build_features
from ziplm.data.sources import load_splits
from ziplm.data.spec import TaskSpec


@dataclass(frozen=True)
class TaskData:
    """The splits a run trains, calibrates, searches and evaluates on."""

    task: TaskSpec
    tokenizer: Any
    train_examples: datasets.Dataset
    train_features: datasets.Dataset
    eval_examples: datasets.Dataset
    eval_features: datasets.Dataset
    # The task's further evaluation splits (MNLI's validation_mismatched): split -> (examples, features).
    extra_eval: dict[str, tuple[datasets.Dataset, datasets.Dataset]] = field(default_factory=dict)

    @classmethod
    def load(cls, task: TaskSpec, tokenizer: Any, seed: int) -> TaskData:
        """Load (Hub, local files or the offline builtins) and tokenize the task's train and eval splits."""
        splits = load_splits(task, seed=seed)
        train, evaluation = splits[task.train_split], splits[task.eval_split]
        return cls(
            task=task,
            tokenizer=tokenizer,
            train_examples=train,
            train_features=build_features(train, tokenizer, task, train=True),
            eval_examples=evaluation,
            eval_features=build_features(evaluation, tokenizer, task, train=False),
            extra_eval={
                split: (splits[split], build_features(splits[split], tokenizer, task, train=False))
                for split in task.eval_splits
                if split != task.eval_split
            },
        )
