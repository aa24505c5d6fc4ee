"""Checks of a label-free sentence-embedding run (task kind ``embedding``) that span config groups.

Split from ``ziplm.config.validate`` (at its size limit); like it, imports neither torch nor a data
library. Each refusal is one line naming the key and a value that works, before any data or model loads.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from ziplm.data.retrieval_spec import check_retrieval
from ziplm.data.spec import check_text_file

ENCODER_FAMILIES = ("bert",)  # families whose bare encoder is a sentence embedder (ziplm.models.build)
LABELLED_METHODS = ("fisher", "fisher-norescale")  # need task-loss gradients (ziplm.pruning.methods: labelled)
PRUNING_COMMANDS = ("run", "prune")


def check_embedding(cfg: DictConfig) -> None:
    """Refuse settings that make no sense without labels or without an encoder.

    Raises:
        ValueError: a decoder model, a labelled pruner or task-loss distillation weight, an empty text file, a
            retrieval set that is no builtin or lacks MTEB's files.
    """
    task: Any = cfg.get("task")
    if task is None or task.get("kind") != "embedding":
        return
    files = task.get("data_files") or {}
    for split, path in files.items():
        if path is not None:
            check_text_file(str(path), f"task.data_files.{split}")
    if task.get("retrieval") is not None:  # an unknown builtin, a folder lacking MTEB's files or columns
        check_retrieval(str(task.retrieval))
    if str(cfg.get("command", "run")) not in PRUNING_COMMANDS:
        return
    family = cfg.model.get("family")
    if family not in ENCODER_FAMILIES:
        raise ValueError(
            f"task.kind=embedding needs an encoder whose pooled token states are the sentence embedding "
            f"(model.family {' or '.join(ENCODER_FAMILIES)}), got model {cfg.model.name} of family {family} "
            "(a causal decoder); e.g. model=minilm"
        )
    if float(cfg.distill.get("task", 0) or 0) > 0:
        raise ValueError(
            f"distill.task must be 0 for task.kind=embedding (no labels, so no task loss), got "
            f"{cfg.distill.task}; e.g. distill.task=0 (distill.logit weighs the pooled-embedding term)"
        )
    if cfg.pruner.get("method") in LABELLED_METHODS:
        raise ValueError(
            f"pruner.method={cfg.pruner.method} scores structures by task-loss gradients, which need labels; "
            "task.kind=embedding has none; e.g. pruner.method=obs"
        )
