"""SweepReportCallback on synthetic sweep folders: writes the report, remembers failures, never raises."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ziplm.report import callbacks
from ziplm.report.callbacks import SweepReportCallback, pop_last_outcome

MakeRun = Callable[..., Path]  # the `runs` fixture of tests/report/conftest.py


def _config(sweep_dir: Path, logger: str = "none") -> object:
    return OmegaConf.create(
        {"hydra": {"sweep": {"dir": str(sweep_dir)}}, "logger": {"kind": logger}, "report": {"references": True}}
    )


def test_writes_the_report_and_remembers_failures(tmp_path: Path, runs: MakeRun) -> None:
    runs(tmp_path / "0", members={2.0: (1.8, 85.0)})
    failed = runs(tmp_path / "1", members={}, dense_metric=None, finished=False)
    (failed / "FAILED").write_text("ValueError: bad value\n\nTraceback ...\n")
    SweepReportCallback(wandb=False).on_multirun_end(_config(tmp_path))
    assert (tmp_path / "sweep.md").is_file() and (tmp_path / "sweep.csv").is_file()
    assert (tmp_path / "pareto_tiny-bert_tiny-cls_cpu.png").is_file()
    outcome = pop_last_outcome()
    assert outcome is not None
    assert (outcome.jobs, outcome.failed, outcome.report) == (2, ("1: ValueError: bad value",), tmp_path / "sweep.md")
    assert pop_last_outcome() is None  # forgotten once read


def test_never_raises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    SweepReportCallback().on_multirun_end(_config(tmp_path / "missing"))
    assert (
        "warning: the sweep report could not be written: FileNotFoundError: no such folder" in capsys.readouterr().err
    )
    assert pop_last_outcome() is None


def test_a_wandb_failure_keeps_the_report_on_disk(
    tmp_path: Path, runs: MakeRun, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs(tmp_path / "0", members={2.0: (1.8, 85.0)})

    def broken(*args: object, **kwargs: object) -> bool:
        raise RuntimeError("wandb service did not start")

    monkeypatch.setattr("ziplm.report.tracking.log_sweep_report", broken)
    SweepReportCallback().on_multirun_end(_config(tmp_path, logger="wandb"))
    assert "not logged to W&B: RuntimeError: wandb service did not start" in capsys.readouterr().err
    assert (tmp_path / "sweep.md").is_file()
    outcome = callbacks.pop_last_outcome()
    assert outcome is not None and outcome.failed == ()
