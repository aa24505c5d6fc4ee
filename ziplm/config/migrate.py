"""Old ``schedule.<key>`` settings and where they live now (the schedule group was split up).

The CLI rewrites old-key overrides (``schedule.damp=0.01``, ``+schedule.damp=``, ``++schedule.damp=``,
sweeps ``schedule.damp=0.001,0.01``) to the new key with one note per rewrite, and turns Hydra's compose
error for an old key inside a YAML preset (``Key 'damp' not in 'ScheduleConfig'``) into one line naming
the new place. Plain Python: imports neither Hydra nor torch.
"""

from __future__ import annotations

import re

# schedule.<old key> -> its new full key (schedule.name and schedule.member_dtype stay where they are).
MOVED: dict[str, str] = {
    "method": "pruner.method",
    "damp": "pruner.damp",
    "calibration_samples": "pruner.calibration_samples",
    "ffn_group_size": "pruner.ffn_group_size",
    "ffn_grid_ratio": "pruner.ffn_grid_ratio",
    "ffn_round_to": "pruner.ffn_round_to",
    "targets": "search.targets",
    "spdy_random_starts": "search.spdy_random_starts",
    "spdy_local_steps": "search.spdy_local_steps",
    "spdy_loss_samples": "search.spdy_loss_samples",
    "speedup_rounds": "search.speedup_rounds",
    "speedup_tolerance": "search.speedup_tolerance",
    "speedup_corrections": "search.speedup_corrections",
    "epochs_per_stage": "distill.epochs_per_stage",
    "learning_rate": "distill.learning_rate",
    "distill_task": "distill.task",
    "distill_logit": "distill.logit",
    "distill_token": "distill.token",
    "distill_temperature": "distill.temperature",
    "teacher_epochs": "teacher.epochs",
    "teacher_learning_rate": "teacher.learning_rate",
}

_OVERRIDE = re.compile(r"^(?P<prefix>~|\+\+|\+)?schedule\.(?P<key>\w+)(?P<rest>(=|$).*)", re.DOTALL)
_COMPOSE_ERROR = re.compile(r"Key '(?P<key>\w+)' not in 'ScheduleConfig'")


def note(old: str, new: str) -> str:
    return f"note: {old} is now {new} (rewritten; use the new name)"


def rewrite_override(arg: str) -> tuple[str, str | None]:
    """``arg`` with an old ``schedule.<key>`` replaced by its new key, and the note to print (or None)."""
    match = _OVERRIDE.match(arg)
    if match is None or match["key"] not in MOVED:
        return arg, None
    old, new = f"schedule.{match['key']}", MOVED[match["key"]]
    return f"{match['prefix'] or ''}{new}{match['rest']}", note(old, new)


def rewrite_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """Every argument rewritten (flags and new keys pass unchanged), and one note per rewrite."""
    rewritten, notes = [], []
    for arg in args:
        new, message = rewrite_override(arg)
        rewritten.append(new)
        if message:
            notes.append(message)
    return rewritten, notes


def compose_error_hint(message: str) -> str | None:
    """One line for Hydra's error on an old schedule key in a YAML file, or None for any other error."""
    match = _COMPOSE_ERROR.search(message)
    if match is None or match["key"] not in MOVED:
        return None
    old, new = f"schedule.{match['key']}", MOVED[match["key"]]
    group, _, key = new.partition(".")
    return (
        f"{old} is no longer a schedule setting: it is now {new}; in a YAML preset move `{match['key']}:` "
        f"from `schedule:` to `{group}:` as `{key}:` (on the command line: {new}=...)"
    )
