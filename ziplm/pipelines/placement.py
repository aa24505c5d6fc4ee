"""Where a run computes and in which precision, and a guard that the dense teacher never changes.

The teacher is the reference of every phase (the dense row, distillation, timing, stitching): a phase
that moved, cast or modified it would silently change everything after it. So the run places it once
(`run_device`), and `TeacherGuard.check` compares it with that placement after every phase.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def run_device(trainer: Mapping[str, Any]) -> torch.device:
    """The device the run's own work (calibration, OBS, SPDY scoring, evaluation) uses: the trainer's.

    ``trainer.accelerator``: cpu → cpu; gpu/cuda → cuda (an error without one); auto → cuda when visible.

    Raises:
        ValueError: a GPU accelerator on a machine without CUDA, or an accelerator this project does not run.
    """
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"trainer.accelerator={accelerator} but no CUDA device is visible; use trainer=cpu "
                "(or trainer.accelerator=cpu) on this machine"
            )
        return torch.device("cuda", torch.cuda.current_device())
    if accelerator == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    raise ValueError(f"trainer.accelerator={accelerator!r} is not supported; choose cpu, gpu or auto")


def eval_precision(trainer: Mapping[str, Any]) -> str:
    """The declared evaluation precision: ``trainer.eval_precision``, else the training precision."""
    declared = trainer.get("eval_precision")
    return str(declared if declared is not None else trainer.get("precision", "32-true"))


def _placement(model: nn.Module) -> dict[str, tuple[str, str, tuple[int, ...]]]:
    return {name: (str(p.device), str(p.dtype), tuple(p.shape)) for name, p in model.state_dict().items()}


def _digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class TeacherGuard:
    """Remembers the teacher's device, dtype, shapes and weights; `check` raises if any phase changed them.

    Hashing the weights costs about a second per 100M parameters on a CPU: small next to any phase.
    """

    def __init__(self, teacher: nn.Module) -> None:
        self.teacher = teacher
        self.placement = _placement(teacher)
        self.digest = _digest(teacher)
        self.checked: list[str] = []

    def check(self, phase: str) -> None:
        """Raises:
        RuntimeError: the teacher was moved, cast, reshaped or modified by `phase` (a ziplm bug)."""
        placement = _placement(self.teacher)
        if placement != self.placement:
            changed = [k for k in self.placement if placement.get(k) != self.placement[k]]
            first = changed[0] if changed else "?"
            raise RuntimeError(
                f"phase {phase!r} changed the dense teacher's placement ({len(changed)} tensors, e.g. {first}: "
                f"{self.placement.get(first)} -> {placement.get(first)}); this is a ziplm bug, please report it"
            )
        if _digest(self.teacher) != self.digest:
            raise RuntimeError(f"phase {phase!r} modified the dense teacher's weights; this is a ziplm bug")
        self.checked.append(phase)
