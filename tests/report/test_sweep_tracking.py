"""W&B naming (RunLabels), the Tracker's group/tags, and logging a sweep report (fake and offline wandb)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from ziplm.config.paths import compose
from ziplm.pipelines.report import tracker_labels
from ziplm.report.tracking import RunLabels, Tracker, log_sweep_report

LABELS = RunLabels(
    "smoke", "tiny-bert", "tiny-cls", "cpu", "oneshot", "magnitude", (1.5, 2.0), "2026-01-01_00-00-00", 3
)


def test_labels_name_group_and_tags() -> None:
    assert LABELS.name == "tiny-bert/tiny-cls/cpu/oneshot-magnitude/1.5x,2x #3"
    assert LABELS.group() == "smoke/2026-01-01_00-00-00"
    assert LABELS.group("my-group") == "my-group"
    assert LABELS.tags(["mine"]) == [
        "experiment:smoke", "model:tiny-bert", "task:tiny-cls", "hardware:cpu", "schedule:oneshot",
        "method:magnitude", "sweep", "mine",
    ]  # fmt: skip
    single = RunLabels("default", "minilm", "bbc-news", "cpu", "oneshot", "obs", (1.5, 2.0, 3.0))
    assert (single.name, single.group()) == ("minilm/bbc-news/cpu/oneshot-obs/1.5x,2x,3x", "default")
    assert "sweep" not in single.tags()


def test_tracker_passes_group_and_tags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def fake_make_logger(settings: dict[str, Any], out: Path, name: str) -> bool:
        seen.update(settings=settings, name=name)
        return False

    monkeypatch.setattr("ziplm.report.tracking.make_logger", fake_make_logger)
    Tracker({"kind": "wandb", "group": None, "tags": ["paper"]}, tmp_path, LABELS)
    assert seen["name"] == LABELS.name
    assert seen["settings"]["group"] == "smoke/2026-01-01_00-00-00"
    assert seen["settings"]["tags"][-2:] == ["sweep", "paper"]
    Tracker({"kind": "csv"}, tmp_path, "plain name")
    assert seen["name"] == "plain name" and "group" not in seen["settings"]


def test_tracker_labels_from_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = compose(["experiment=smoke", "pruner.method=random"])
    single = tracker_labels(cfg)
    assert (single.name, single.group()) == ("tiny-bert/tiny-cls/cpu/oneshot-random/1.5x,2x", "smoke")
    job = types.SimpleNamespace(
        mode=RunMode.MULTIRUN,
        sweep=types.SimpleNamespace(dir="outputs/multirun/smoke/2026-01-01_00-00-00"),
        job=types.SimpleNamespace(num=1),
    )
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: job))
    swept = tracker_labels(cfg)
    assert (swept.group(), swept.job) == ("smoke/2026-01-01_00-00-00", 1)


class FakeRun:
    def __init__(self, **kwargs: Any) -> None:
        self.init = kwargs
        self.logged: dict[str, Any] = {}
        self.summary: dict[str, Any] = {}
        self.settings = types.SimpleNamespace(mode=kwargs["mode"])
        self.finished = False

    def log(self, data: dict[str, Any]) -> None:
        self.logged.update(data)

    def finish(self) -> None:
        self.finished = True


def test_sweep_report_goes_to_wandb_as_table_and_images(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runs: list[FakeRun] = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: runs.append(FakeRun(**kw)) or runs[-1]  # type: ignore[attr-defined]
    fake.Table = lambda columns, data: ("table", columns, data)  # type: ignore[attr-defined]
    fake.Image = lambda path: ("image", path)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    plot = tmp_path / "pareto_a_b_c.png"
    logged = log_sweep_report(
        {"kind": "wandb", "mode": "offline", "tags": ["x"]}, tmp_path, "smoke/t", ["run", "metric"],
        [["0", 1.5]], [plot], tmp_path / "sweep.md",
    )  # fmt: skip
    assert logged and len(runs) == 1 and runs[0].finished
    run = runs[0]
    assert (run.init["group"], run.init["job_type"], run.init["mode"]) == ("smoke/t", "sweep-report", "offline")
    assert run.init["tags"] == ["sweep-report", "x"] and run.init["dir"] == str(tmp_path)
    assert run.logged["sweep"] == ("table", ["run", "metric"], [["0", 1.5]])
    assert run.logged["pareto/pareto_a_b_c"] == ("image", str(plot))
    assert not log_sweep_report({"kind": "csv"}, tmp_path, "g", [], [], [], tmp_path / "sweep.md")
    assert len(runs) == 1


def test_sweep_report_with_offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The real client, offline (no account, no network): a run folder appears under <dir>/wandb."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    from ziplm.report.pareto import Series, plot_pareto

    plot = plot_pareto([Series("obs", [(1.0, 90.0), (2.0, 85.0)])], [], "accuracy", True, "t", tmp_path / "p.png")
    columns = ["run", "kind", "seed", "target", "metric"]
    quoted = ["", "quoted, other hardware", "", 2.0, 89.1]
    rows = [["0", "measured", 0, "", 90.0], ["0", "measured", 0, 2.0, 85], quoted]
    assert log_sweep_report({"kind": "wandb"}, tmp_path, "g", columns, rows, [plot], tmp_path / "sweep.md")
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
