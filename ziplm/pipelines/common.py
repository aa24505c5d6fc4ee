"""Flattening the composed Hydra config into the typed objects the layers below take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ziplm.latency.measure import Environment
from ziplm.models.build import Head, ModelSpec
from ziplm.models.io import MANIFEST

_HEADS: dict[str, Head] = {
    "classification": "classification",
    "regression": "classification",
    "qa": "qa",
    "lm": "lm",
    "embedding": "base",  # the bare encoder (BertModel); the pooling travels beside it (ziplm.models.pooling)
}


def to_dict(node: Any) -> dict[str, Any]:
    container = OmegaConf.to_container(node, resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


def model_spec(cfg: DictConfig) -> ModelSpec:
    """The ``model`` group as a `ModelSpec`."""
    return ModelSpec(**to_dict(cfg.model))


def environment(cfg: DictConfig) -> Environment:
    """The ``hardware`` group as an `Environment` (its ``name`` is a label, not part of the timing)."""
    fields = to_dict(cfg.hardware)
    fields.pop("name", None)
    return Environment(**fields)


def task_head(cfg: DictConfig) -> Head:
    """Which model head the configured task needs."""
    return head_for(str(cfg.task.name), str(cfg.task.kind))


def head_for(name: str, kind: str) -> Head:
    """Which model head a task of `kind` needs."""
    if kind not in _HEADS:
        raise ValueError(f"task {name!r} has unknown kind {kind!r}; known kinds: {sorted(_HEADS)}")
    return _HEADS[kind]


def member_folder(checkpoint: Any, command: str) -> Path:
    """`checkpoint` as a saved ziplm member folder, or a clear error saying what `ziplm <command>` needs."""
    if not checkpoint:
        raise ValueError(f"ziplm {command} needs checkpoint=<member folder, e.g. outputs/run/.../family/2x>")
    folder = Path(str(checkpoint))
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint {folder} does not exist; pass a family member folder (family/<S>x)")
    if not (folder / MANIFEST).is_file():
        raise ValueError(f"{folder} is not a ziplm model folder (no {MANIFEST}); pass a family member folder")
    return folder


def configured_model(cfg: DictConfig) -> Any:
    """The dense model of the ``model`` group with the task's head (its label count), in eval mode: what
    `ziplm latency` tables and what plain checkpoints are timed against."""
    from ziplm.models.build import build_model

    num_labels = cfg.task.get("num_labels")
    head = task_head(cfg)
    extra = {"num_labels": int(num_labels)} if head == "classification" and num_labels else {}
    return build_model(model_spec(cfg), head, **extra).eval()


def checkpoint_sources(value: Any, command: str) -> list[str]:
    """`checkpoint=` as a list of sources (one, or a list for ``ziplm latency``); empty -> a clear error."""
    if value is None or (isinstance(value, str) and not value.strip()) or (not isinstance(value, str) and not value):
        raise ValueError(
            f"ziplm {command} needs checkpoint=<a member folder (outputs/run/.../family/2x), an HF folder or a Hub id>"
        )
    values = [value] if isinstance(value, str) else [str(v) for v in value]
    if any(not v.strip() for v in values):
        raise ValueError(f"checkpoint={value}: an empty entry; give each checkpoint as a folder or Hub id")
    return values
