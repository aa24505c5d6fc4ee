"""Published checkpoints a preset compares against, measured in the run's own harness (``baselines:``).

Each entry names a plain Hugging Face checkpoint (Hub id or folder) fine-tuned for the run's task, the
label its row carries, and where its published numbers come from. `ziplm run` evaluates and times each
one beside the dense model and the family; their *quoted* numbers stay in ``reference`` (other hardware).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_MEMBER = re.compile(r"^\d+(\.\d+)?x$")  # member folder names ("1.5x") cannot be baseline labels


@dataclass(frozen=True)
class Baseline:
    """One baseline row: ``checkpoint`` (Hub id or folder), its ``label``, the ``citation`` of the model."""

    checkpoint: str
    label: str
    citation: str = ""


def parse_baselines(entries: Any) -> list[Baseline]:
    """The ``baselines:`` list as `Baseline` objects.

    Raises:
        ValueError: an entry that is not a mapping with a checkpoint and a label, an unknown key, or a label
            used twice or shaped like a member name.
    """
    if (entries is not None and not isinstance(entries, Sequence | list)) or isinstance(entries, str):
        raise ValueError(f"baselines must be a list of {{checkpoint, label, citation}} entries, got {entries!r}")
    found: list[Baseline] = []
    for index, entry in enumerate(entries or []):
        where = f"baselines[{index}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be a mapping {{checkpoint: ..., label: ..., citation: ...}}, got {entry!r}")
        unknown = sorted(set(entry) - {"checkpoint", "label", "citation"})
        if unknown:
            raise ValueError(f"{where} has unknown keys {unknown}; it takes checkpoint, label and citation")
        checkpoint, label = entry.get("checkpoint"), entry.get("label")
        if not isinstance(checkpoint, str) or not checkpoint.strip():
            raise ValueError(f"{where}.checkpoint must be a Hub id or a folder, got {checkpoint!r}")
        if not isinstance(label, str) or not label.strip() or label == "dense" or _MEMBER.match(label):
            raise ValueError(f"{where}.label must name the row (not 'dense' or a member name like '2x'), got {label!r}")
        if label in {b.label for b in found}:
            raise ValueError(f"{where}.label {label!r} is used twice; each baseline row needs its own label")
        found.append(Baseline(checkpoint, label, str(entry.get("citation") or "")))
    return found
