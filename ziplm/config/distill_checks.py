"""Checks of the ``distill`` group: how each pruned member is distilled from the dense teacher.

Split from ``ziplm.config.validate`` (at its size limit); like it, imports neither torch nor Lightning,
so a bad value fails in the first second with one line naming the key and a value that works.
"""

from __future__ import annotations

from typing import Any


def check_distill(g: Any) -> None:
    """`g` is validate's ``_Group("distill", values)``; its ``fail`` raises the one-line message."""
    values = g.values
    epochs = g.number("epochs_per_stage", 1, "[0, inf)", note=" (0 = no distillation)")
    g.number("learning_rate", 5e-5, "(0, inf)")
    for key in ("task", "logit", "token"):
        g.number(key, 1.0, "[0, inf)")
    g.number("temperature", 2.0, "(0, inf)")
    g.number("dropout", 0.0, "[0, 1)", optional=True, note=" (null = the model's own dropout)")
    if epochs and not any(values[k] for k in ("task", "logit", "token")):
        g.fail(
            "logit",
            f"> 0 (or distill.task, distill.token) with distill.epochs_per_stage={epochs:g}: with every "
            "distillation weight 0 nothing would be trained",
            1.0,
        )
