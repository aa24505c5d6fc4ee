"""The run's Lightning logger from the `logger` group's `_target_` config (hydra.utils.instantiate)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from ziplm.config.paths import compose
from ziplm.config.validate import validate_config
from ziplm.pipelines.common import to_dict
from ziplm.report.records import MemberRecord
from ziplm.report.tracking import RunLabels, Tracker, is_wandb, make_logger

_DENSE = MemberRecord("dense", 1000, {"accuracy": 90.0}, "32-true")

LABELS = RunLabels("smoke", "tiny-bert", "tiny-cls", "cpu", "oneshot", "obs", (1.5, 2.0))


def _logger(overrides: list[str]) -> dict[str, Any]:
    cfg = compose(overrides)
    validate_config(cfg)
    return to_dict(cfg.logger)


def test_csv_writes_its_files_under_the_run(tmp_path: Path) -> None:
    tracker = Tracker(_logger(["logger=csv"]), tmp_path, LABELS)
    logger = tracker.lightning_logger
    assert isinstance(logger, CSVLogger)
    tracker.log_member({"speedup": 2.0, "metric": 0.9, "name": "2x"}, step=1)
    logger.save()
    metrics = tmp_path / "csv" / "version_0" / "metrics.csv"
    assert metrics.is_file() and "family/speedup" in metrics.read_text()
    tracker.log_report(_DENSE, [], "accuracy", tmp_path / "p.png", tmp_path / "t.json")  # W&B only: nothing


def test_none_is_no_logger(tmp_path: Path) -> None:
    tracker = Tracker(_logger(["logger=none"]), tmp_path, LABELS)
    assert tracker.lightning_logger is False
    tracker.log_member({"speedup": 2.0}, step=1)
    tracker.log_report(_DENSE, [], "accuracy", tmp_path / "p.png", tmp_path / "t.json")
    assert list(tmp_path.iterdir()) == []


def test_wandb_offline_creates_its_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the yaml's mode: offline
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = Tracker(_logger(["logger=wandb", "logger.tags=[paper]"]), tmp_path, LABELS)
    logger = tracker.lightning_logger
    assert isinstance(logger, WandbLogger)
    try:
        tracker.log_member({"speedup": 2.0}, step=1)
        run = logger.experiment
        assert run.settings.mode == "offline"
        assert run.group == "smoke" and run.name == LABELS.name
        assert "model:tiny-bert" in run.tags and run.tags[-1] == "paper"
    finally:
        logger.experiment.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def _captured(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What make_logger hands hydra.utils.instantiate (no logger is built)."""
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr("hydra.utils.instantiate", lambda config, **kw: seen.append(dict(config)) or False)
    return seen


def test_the_environment_wins_over_the_yaml_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _captured(monkeypatch)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    make_logger(_logger(["logger=wandb"]), tmp_path, "run")
    assert seen[-1]["mode"] == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    make_logger(_logger(["logger=wandb", "logger.mode=online"]), tmp_path, "run")
    expected = {"_target_": "lightning.pytorch.loggers.WandbLogger", "mode": "online", "project": "ziplm"}
    assert {k: seen[-1][k] for k in expected} == expected
    assert (seen[-1]["save_dir"], seen[-1]["name"]) == (str(tmp_path), "run")
    assert "kind" not in seen[-1]


def test_a_config_without_target_still_names_its_logger_by_kind(tmp_path: Path) -> None:
    legacy = {"kind": "csv", "project": "ziplm", "mode": "offline", "group": None, "tags": []}
    logger = make_logger(legacy, tmp_path, "run")
    assert isinstance(logger, CSVLogger) and Path(logger.log_dir) == tmp_path / "csv" / "version_0"
    assert make_logger({"kind": "none"}, tmp_path, "run") is False
    assert is_wandb({"kind": "wandb"}) and not is_wandb({"kind": "csv"})


class MemoryLogger(Logger):
    """A logger class of the user's own: only `save_dir`, `name` and `flavour`."""

    def __init__(self, save_dir: str, name: str = "x", flavour: str = "plain") -> None:
        super().__init__()
        self.save_dir_, self.name_, self.flavour, self.metrics = save_dir, name, flavour, []

    @property
    def name(self) -> str:
        return self.name_

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append((step, metrics))


class MyWandb(WandbLogger):
    pass


@pytest.fixture
def user_loggers(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("fake_ziplm_loggers")
    module.MemoryLogger, module.MyWandb = MemoryLogger, MyWandb  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_ziplm_loggers", module)


@pytest.mark.usefixtures("user_loggers")
def test_target_can_name_another_logger_class(tmp_path: Path) -> None:
    settings = _logger(["logger=none", "logger._target_=fake_ziplm_loggers.MemoryLogger", "+logger.flavour=spicy"])
    tracker = Tracker(settings, tmp_path, LABELS)
    logger = tracker.lightning_logger
    assert isinstance(logger, MemoryLogger)
    assert (logger.save_dir_, logger.name, logger.flavour) == (str(tmp_path), LABELS.name, "spicy")
    tracker.log_member({"speedup": 2.0}, step=3)
    assert logger.metrics == [(3, {"family/speedup": 2.0})]
    tracker.log_report(_DENSE, [], "accuracy", tmp_path / "p.png", tmp_path / "t.json")  # not W&B: nothing


@pytest.mark.usefixtures("user_loggers")
def test_wandb_is_decided_by_class_not_by_name(tmp_path: Path) -> None:
    settings = _logger(["logger=csv", "logger._target_=fake_ziplm_loggers.MyWandb"])
    assert is_wandb(settings) and not is_wandb(_logger(["logger=csv"]))
    assert not is_wandb({"_target_": "fake_ziplm_loggers.MemoryLogger", "kind": "wandb"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["logger.kind=csv"], r"logger.kind must be 'wandb' .*to switch loggers use logger=csv"),
        (["logger=csv", "+logger.flush_every=5"], r"did you mean flush_logs_every_n_steps\?"),
        (["+logger.not_a_wandb_setting=1"], r"logger.not_a_wandb_setting must be a keyword argument"),
        (["logger._target_=no_such_module.Logger"], r"logger._target_ must be an importable class"),
        (["logger.mode=cloud"], r"logger.mode must be one of"),
    ],
)
def test_bad_logger_settings_fail_clearly(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        validate_config(compose(overrides))
    assert "\n" not in str(info.value)
