"""Published checkpoints a preset compares against, measured in the run's own harness (``baselines:``).

Each entry names a plain Hugging Face checkpoint (Hub id or folder) fine-tuned for the run's task, the
label its row carries, and where its published numbers come from. `ziplm run` evaluates and times each
one beside the dense model and the family; their *quoted* numbers stay in ``reference`` (other hardware).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_MEMBER = re.compile(r"^\d+(\.\d+)?x$")  # member folder names ("1.5x") cannot be baseline labels


@dataclass(frozen=True)
class Baseline:
    """One baseline row: ``checkpoint`` (Hub id or folder), its ``label``, the ``citation`` of the model, and
    the ``task`` it was fine-tuned for (a ``conf/task`` option; None: any task) — a preset that sweeps tasks
    lists each task's checkpoints and every run measures only its own task's."""

    checkpoint: str
    label: str
    citation: str = ""
    task: str | None = None


def for_task(baselines: Sequence[Baseline], task: str) -> tuple[Baseline, ...]:
    """The baselines a run of `task` measures: those fine-tuned for it, and those not tied to a task."""
    return tuple(b for b in baselines if b.task in (None, task))


def parse_baselines(entries: Any, tasks: Collection[str] = ()) -> list[Baseline]:
    """The ``baselines:`` list as `Baseline` objects; `tasks`: the known task names an entry's ``task`` may take.

    Raises:
        ValueError: an entry that is not a mapping with a checkpoint and a label, an unknown key, or a label
            used twice or shaped like a member name.
    """
    if (entries is not None and not isinstance(entries, Sequence | list)) or isinstance(entries, str):
        raise ValueError(f"baselines must be a list of {{checkpoint, label, citation, task}} entries, got {entries!r}")
    found: list[Baseline] = []
    for index, entry in enumerate(entries or []):
        where = f"baselines[{index}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be a mapping {{checkpoint: ..., label: ..., citation: ...}}, got {entry!r}")
        unknown = sorted(set(entry) - {"checkpoint", "label", "citation", "task"})
        if unknown:
            raise ValueError(f"{where} has unknown keys {unknown}; it takes checkpoint, label, citation and task")
        task = entry.get("task")
        if task is not None and (not isinstance(task, str) or (tasks and task not in tasks)):
            known = f"; known tasks: {', '.join(sorted(tasks))}" if tasks else ""
            raise ValueError(f"{where}.task must name the task the checkpoint was fine-tuned for, got {task!r}{known}")
        checkpoint, label = entry.get("checkpoint"), entry.get("label")
        if not isinstance(checkpoint, str) or not checkpoint.strip():
            raise ValueError(f"{where}.checkpoint must be a Hub id or a folder, got {checkpoint!r}")
        if not isinstance(label, str) or not label.strip() or label == "dense" or _MEMBER.match(label):
            raise ValueError(f"{where}.label must name the row (not 'dense' or a member name like '2x'), got {label!r}")
        if label in {b.label for b in found if b.task in (None, task) or task is None}:
            raise ValueError(f"{where}.label {label!r} is used twice; each baseline row needs its own label")
        found.append(Baseline(checkpoint, label, str(entry.get("citation") or ""), task))
    return found
