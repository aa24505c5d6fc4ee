"""The stage Trainer from the `trainer` group's `_target_` config, the `callbacks` group, and their checks."""

from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, Timer
from lightning.pytorch.loggers import CSVLogger

from ziplm.config import instantiable
from ziplm.config.paths import REPO_ROOT, compose
from ziplm.config.schema import TrainerConfig
from ziplm.config.validate import validate_config
from ziplm.lit import trainer as lit_trainer
from ziplm.lit.trainer import make_callbacks, make_trainer
from ziplm.pipelines.common import to_dict
from ziplm.report import tracking


def _trainer(overrides: list[str]) -> dict:
    cfg = compose(["logger=none", *overrides])
    validate_config(cfg)
    return to_dict(cfg.trainer)


def test_mirrors_in_the_config_layer_equal_their_sources() -> None:
    assert instantiable.TRAINER_TARGET == lit_trainer.TRAINER_TARGET
    assert set(instantiable.TRAINER_ZIPLM_KEYS) == set(lit_trainer.ZIPLM_KEYS)
    assert set(instantiable.TRAINER_RUNTIME_KEYS) == set(lit_trainer.RUNTIME_KEYS)
    assert instantiable.LOGGER_TARGETS == tracking.LOGGER_TARGETS
    schema = {f.name for f in dataclasses.fields(TrainerConfig)} - set(lit_trainer.ZIPLM_KEYS)
    assert schema == set(instantiable.TRAINER_SCHEMA_KWARGS)
    lightning_kwargs = set(inspect.signature(L.Trainer).parameters)
    assert schema <= lightning_kwargs
    assert set(lit_trainer.RUNTIME_KEYS) | set(lit_trainer.STAGE_DEFAULTS) <= lightning_kwargs


def test_a_user_kwarg_reaches_the_trainer(tmp_path: Path) -> None:
    trainer = _trainer(["+trainer.accumulate_grad_batches=4", "+trainer.num_sanity_val_steps=2"])
    built = make_trainer(trainer, tmp_path, max_epochs=0.5, show_progress=False)
    assert built.accumulate_grad_batches == 4
    assert built.limit_train_batches == 0.5 and built.max_epochs == 1 and built.limit_val_batches == 0
    assert built.checkpoint_callback is None  # ziplm saves stages itself
    assert built.num_sanity_val_steps == 2  # the user's key wins over ziplm's stage default (0)
    assert make_trainer(trainer, tmp_path, validate=True, show_progress=False).limit_val_batches == 1.0


def test_the_trainer_class_comes_from_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class MyTrainer(L.Trainer):
        pass

    module = types.ModuleType("fake_ziplm_trainers")
    module.MyTrainer = MyTrainer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_ziplm_trainers", module)
    trainer = _trainer(["trainer._target_=fake_ziplm_trainers.MyTrainer"])
    assert type(make_trainer(trainer, tmp_path, show_progress=False)) is MyTrainer


def test_callbacks_from_the_config_reach_every_stage_trainer(tmp_path: Path) -> None:
    trainer = _trainer(["callbacks=default", "+callbacks.timer={_target_:lightning.pytorch.callbacks.Timer}"])
    assert set(trainer["callbacks"]) == {"lr_monitor", "timer"}  # trainer.callbacks is the callbacks group
    logger = CSVLogger(str(tmp_path))
    first = make_trainer(trainer, tmp_path / "stage1", logger=logger, show_progress=False)
    extra = Callback()
    second = make_trainer(trainer, tmp_path / "stage2", logger=logger, show_progress=False, callbacks=[extra])
    monitors = [c for c in first.callbacks if isinstance(c, LearningRateMonitor)]
    assert len(monitors) == 1 and monitors[0].logging_interval == "step"
    assert sum(isinstance(c, Timer) for c in first.callbacks) == 1
    assert extra in second.callbacks and sum(isinstance(c, Timer) for c in second.callbacks) == 1
    assert monitors[0] not in second.callbacks  # built afresh for every Trainer
    # Without a logger, LearningRateMonitor would raise at fit: it is left out.
    quiet = make_trainer(trainer, tmp_path / "stage3", show_progress=False)
    assert not any(isinstance(c, LearningRateMonitor) for c in quiet.callbacks)


def test_a_stage_fits_with_the_configured_callbacks(tmp_path: Path) -> None:
    """A real (tiny) fit: the stage Trainer runs the configured callback's hooks."""
    import torch

    calls: list[str] = []

    class Counting(Callback):
        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            calls.append("start")

    module = types.ModuleType("fake_ziplm_callbacks")
    module.Counting = Counting  # type: ignore[attr-defined]
    sys.modules["fake_ziplm_callbacks"] = module
    try:
        trainer = _trainer(["+callbacks.count={_target_:fake_ziplm_callbacks.Counting}"])

        class Tiny(L.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.layer = torch.nn.Linear(2, 1)

            def training_step(self, batch: torch.Tensor, _: int) -> torch.Tensor:
                return self.layer(batch).sum()

            def configure_optimizers(self) -> torch.optim.Optimizer:
                return torch.optim.SGD(self.parameters(), lr=0.1)

        data = torch.utils.data.DataLoader(torch.randn(4, 2), batch_size=2)
        make_trainer(trainer, tmp_path, max_epochs=1, show_progress=False).fit(Tiny(), train_dataloaders=data)
    finally:
        del sys.modules["fake_ziplm_callbacks"]
    assert calls == ["start"]


def test_make_callbacks() -> None:
    built = make_callbacks({"off": None, "timer": {"_target_": "lightning.pytorch.callbacks.Timer"}})
    assert [type(c) for c in built] == [Timer]
    assert make_callbacks(None) == [] and make_callbacks({}) == []
    with pytest.raises(TypeError, match=r"callbacks.bad built a dict"):
        make_callbacks({"bad": {"_target_": "builtins.dict"}})


def test_a_configured_model_checkpoint_turns_checkpointing_on(tmp_path: Path) -> None:
    trainer = {"accelerator": "cpu", "devices": 1}
    built = make_trainer(trainer, tmp_path, show_progress=False, callbacks=[ModelCheckpoint(dirpath=tmp_path)])
    assert isinstance(built.checkpoint_callback, ModelCheckpoint)


def test_ddp_cpu_is_two_cpu_processes_in_full_precision() -> None:
    trainer = _trainer(["trainer=ddp-cpu"])
    expected = {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "num_nodes": 1, "precision": "32-true"}
    assert {k: trainer[k] for k in expected} == expected
    assert _trainer(["trainer=ddp"])["strategy"] == "ddp"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+trainer.acumulate_grad_batches=4", "did you mean accumulate_grad_batches?"),
        ("+trainer.logger=true", "ziplm sets it for every stage"),
        ("trainer._target_=no_such_module.Trainer", "trainer._target_ must be an importable class"),
        ("+callbacks.t={_target_:lightning.pytorch.callbacks.Timer,duraton:1}", "callbacks.t.duraton must be"),
        ("+callbacks.t=3", "callbacks.t must be a mapping with a _target_"),
    ],
)
def test_bad_trainer_and_callback_settings_fail_clearly(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        validate_config(compose(["logger=none", override]))
    assert "\n" not in str(info.value) and "; e.g. " in str(info.value)


def test_a_misspelt_trainer_kwarg_fails_on_the_cli_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": "", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "ziplm", "run", "experiment=smoke", "+trainer.acumulate_grad_batches=4",
         f"output_root={tmp_path}"],
        cwd=REPO_ROOT, env={**env, "WANDB_MODE": "offline"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ValueError: trainer.acumulate_grad_batches "), lines
    assert "+trainer.accumulate_grad_batches=4" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "cache").exists()  # failed before any data, teacher or latency table
    assert seconds < 30, f"took {seconds:.1f} s"
