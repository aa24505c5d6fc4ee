"""``ziplm report <dir>``: the pipeline on synthetic runs, its bad-input errors, and the positional folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ziplm.__main__ import _report_args
from ziplm.config.paths import REPO_ROOT, compose
from ziplm.pipelines.report import run_report

MakeRun = Callable[..., Path]  # the `runs` fixture of tests/report/conftest.py


def _report(folder: Path | str | None, *extra: str) -> None:
    overrides = ["logger=none", *extra]
    if folder is not None:
        overrides.append(f"report.dir={folder}")
    run_report(compose(overrides, command="report"))


def test_report_writes_beside_the_runs(tmp_path: Path, runs: MakeRun, capsys: pytest.CaptureFixture[str]) -> None:
    runs(tmp_path / "0", members={2.0: (1.8, 85.0)})
    runs(tmp_path / "1", members={}, dense_metric=None, finished=False)
    _report(tmp_path)
    assert {p.name for p in tmp_path.iterdir() if p.is_file()} == {
        "sweep.md",
        "sweep.csv",
        "pareto_tiny-bert_tiny-cls_cpu.png",
    }
    out = capsys.readouterr().out
    assert "2 runs, 2 measured models, 1 failed or incomplete" in out and "1 (incomplete: no results.md" in out


@pytest.mark.parametrize(
    ("folder", "error", "message"),
    [
        (None, ValueError, r"ziplm report needs a folder: `ziplm report <dir>` \(or report.dir=<dir>\)"),
        ("{tmp}/nowhere", FileNotFoundError, r"report folder .*/nowhere does not exist"),
        ("{tmp}/file.txt", ValueError, r"report folder .*/file.txt is a file, not a folder"),
        ("{tmp}/empty", ValueError, r"report folder .*/empty is empty: no runs to report"),
        ("{tmp}/other", ValueError, r"no ziplm runs found under .*/other \(only other commands' runs: a \(latency\)\)"),
        ("{tmp}/notes", ValueError, r"no ziplm runs found under .*/notes; a run folder is one with .hydra/config.yaml"),
    ],
)
def test_bad_folders_fail_with_what_to_pass(
    tmp_path: Path, runs: MakeRun, folder: str | None, error: type[Exception], message: str
) -> None:
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    runs(tmp_path / "other" / "a", command="latency")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no runs here")
    with pytest.raises(error, match=message):
        _report(None if folder is None else folder.format(tmp=tmp_path))


def test_positional_folder_becomes_report_dir() -> None:
    assert _report_args(["outputs/multirun/x", "logger=none"]) == ["report.dir=outputs/multirun/x", "logger=none"]
    assert _report_args(["report.dir=a", "b"]) == ["report.dir=a", "b"]  # an override stays an override
    assert _report_args(["--cfg", "job"]) == ["--cfg", "job"]
    assert _report_args([]) == []


def test_cli_report_with_a_positional_folder(tmp_path: Path, runs: MakeRun) -> None:
    runs(tmp_path / "sweep" / "0", members={2.0: (1.8, 85.0)})
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": ""}
    cli = [sys.executable, "-m", "ziplm", "report"]
    ok = subprocess.run(
        [*cli, str(tmp_path / "sweep"), "logger=none", f"output_root={tmp_path / 'out'}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "sweep" / "sweep.md").is_file() and "1 runs, 2 measured models" in ok.stdout
    bad = subprocess.run(
        [*cli, str(tmp_path / "missing"), "logger=none", f"output_root={tmp_path / 'out'}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 1
    assert f"error: FileNotFoundError: report folder {tmp_path / 'missing'} does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr
