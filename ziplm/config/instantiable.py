"""Checks of the ``_target_`` groups: trainer, logger and callbacks (`ziplm.config.validate` calls them).

Their keys are keyword arguments of the class a config names, so a misspelt one is found by importing that
class and reading its signature. That import (Lightning: seconds) happens only when a config has keys
beyond the ones known to be fine, or names a class of its own; the default and preset configs need none.
The tables below mirror `ziplm.lit.trainer` and `ziplm.report.tracking` (the config layer may not import
them; tests/lit/test_trainer_config.py checks each copy against its source).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any

TRAINER_TARGET = "lightning.pytorch.Trainer"  # ziplm.lit.trainer.TRAINER_TARGET
TRAINER_ZIPLM_KEYS = ("_target_", "batch_size", "eval_batch_size", "num_workers", "eval_precision", "callbacks")
# Set per stage by make_trainer (ziplm.lit.trainer.RUNTIME_KEYS) from the run: the config must not set them.
TRAINER_RUNTIME_KEYS = {
    "default_root_dir": "a folder under the run directory",
    "logger": "the logger group: logger=wandb|csv|none",
    "enable_progress_bar": "on in a terminal",
}
# Lightning Trainer kwargs of the trainer schema (checked against Trainer's signature by the tests).
TRAINER_SCHEMA_KWARGS = (
    "accelerator", "devices", "num_nodes", "strategy", "precision", "max_epochs", "max_steps",
    "gradient_clip_val", "log_every_n_steps", "limit_train_batches", "limit_val_batches",
)  # fmt: skip
# ziplm.report.tracking.LOGGER_TARGETS (the logger group's choices), and other paths of the same classes.
LOGGER_TARGETS: dict[str, str | None] = {
    "wandb": "lightning.pytorch.loggers.WandbLogger",
    "csv": "lightning.pytorch.loggers.CSVLogger",
    "none": None,
}
_ALIASES = {
    "lightning.pytorch.loggers.wandb.WandbLogger": "wandb",
    "lightning.pytorch.loggers.csv_logs.CSVLogger": "csv",
}
LOGGER_KEYS = ("_target_", "kind", "project", "mode", "group", "tags")  # every choice's (the schema's)
WANDB_MODES = ("offline", "online", "disabled", "shared", "dryrun", "run")  # wandb.Settings.mode


def _show(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def _import(key: str, target: Any, example: str) -> Any:
    """The class (or callable) a ``_target_`` names; a clear error when it cannot be imported."""
    from hydra._internal.utils import _locate  # what hydra.utils.instantiate uses, without its error log

    try:
        return _locate(str(target))
    except Exception as err:  # Hydra's ImportError: one line, the reason last
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{key} must be an importable class, got {_show(target)} ({reason}); e.g. {key}={example}"
        ) from None


def _names(function: Any) -> list[str] | None:
    """The keyword arguments `function` takes; None when it takes any (``**kwargs``) or has no signature."""
    try:
        params = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return [k for k, p in params.items() if p.kind is not p.VAR_POSITIONAL]


def check_kwargs(group: str, target: Any, kwargs: Mapping[str, Any], *, add: bool = True) -> None:
    """Every key of `kwargs` must be a keyword argument of `target` (anything goes where it takes ``**kwargs``;
    WandbLogger's go to ``wandb.init``, so those count). The message suggests the nearest argument name.
    """
    cls = _import(f"{group}._target_", target, TRAINER_TARGET if group == "trainer" else "<module>.<Class>")
    names = _names(cls)
    if names is None and group == "logger" and logger_kind(target) == "wandb":
        import wandb

        own = inspect.signature(cls).parameters
        names = [*(k for k, p in own.items() if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD)]
        names += _names(wandb.init) or []
    if names is None:
        return
    for key, value in kwargs.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {close[0]}?" if close else f"see {target}'s arguments"
            fix = f"{'+' if add else ''}{group}.{close[0]}={_show(value)}" if close else f"~{group}.{key}"
            raise ValueError(
                f"{group}.{key} must be a keyword argument of {target} ({hint}), got {_show(value)}; e.g. {fix}"
            )


def check_trainer(values: Mapping[str, Any]) -> None:
    """The trainer group's own keys are checked by `validate`; here its class and the Lightning kwargs."""
    for key, source in TRAINER_RUNTIME_KEYS.items():
        if key in values:
            raise ValueError(
                f"trainer.{key} must not be set (ziplm sets it for every stage: {source}), got "
                f"{_show(values[key])}; e.g. ~trainer.{key}"
            )
    target = values.get("_target_") or TRAINER_TARGET
    extra = {k: v for k, v in values.items() if k not in TRAINER_ZIPLM_KEYS and k not in TRAINER_SCHEMA_KWARGS}
    if extra or target != TRAINER_TARGET:
        check_kwargs("trainer", target, extra)


def logger_kind(target: Any) -> str | None:
    """The logger choice a ``_target_`` is (wandb | csv | none), or None for any other class."""
    if not target:
        return "none"
    return _ALIASES.get(str(target)) or next((k for k, v in LOGGER_TARGETS.items() if v == target), None)


def check_logger(values: Mapping[str, Any]) -> None:
    """`kind` names the choice (it no longer picks the logger); mode is W&B's; extra keys are the class's kwargs."""
    target, kind = values.get("_target_"), values.get("kind")
    expected = logger_kind(target)
    if kind is not None and expected is not None and kind != expected:
        switch = f"logger={kind}" if kind in LOGGER_TARGETS else "logger._target_=<a Lightning logger class>"
        raise ValueError(
            f"logger.kind must be {expected!r} with logger._target_={_show(target)} (kind only names the "
            f"choice; to switch loggers use {switch}), got {_show(kind)}; e.g. logger.kind={expected}"
        )
    if values.get("mode") not in WANDB_MODES:
        modes = ", ".join(WANDB_MODES)
        raise ValueError(
            f"logger.mode must be one of {modes}, got {_show(values.get('mode'))}; e.g. logger.mode=offline"
        )
    if not isinstance(values.get("tags"), list | tuple):
        raise ValueError(f"logger.tags must be a list, got {_show(values.get('tags'))}; e.g. logger.tags=[paper]")
    extra = {k: v for k, v in values.items() if k not in LOGGER_KEYS}
    if target and (extra or expected is None):  # imports the class (W&B: also wandb) only then
        check_kwargs("logger", target, extra)


def check_callbacks(values: Mapping[str, Any]) -> None:
    """Each entry: null (off) or a ``_target_`` config whose keys are its class's kwargs."""
    for name, config in values.items():
        if config is None:
            continue
        if not isinstance(config, Mapping) or not config.get("_target_"):
            raise ValueError(
                f"callbacks.{name} must be a mapping with a _target_ (a Lightning callback class), got "
                f"{_show(config)}; e.g. +callbacks.{name}={{_target_:lightning.pytorch.callbacks.Timer}}"
            )
        kwargs = {k: v for k, v in config.items() if not str(k).startswith("_")}
        check_kwargs(f"callbacks.{name}", config["_target_"], kwargs, add=False)
