"""``ziplm report <dir> report.publish=<folder>``: the self-contained copy committed results are made of."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ziplm.config.paths import REPO_ROOT
from ziplm.report.provenance import provenance

MakeRun = Callable[..., Path]  # the `runs` fixture of tests/report/conftest.py


def _cli(*args: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": ""}
    return subprocess.run(
        [sys.executable, "-m", "ziplm", "report", *args, "logger=none", f"output_root={out}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def _sweep(tmp_path: Path, runs: MakeRun) -> Path:
    """Three jobs of one sweep: two finished (one with provenance, plots and logs), one failed."""
    sweep = tmp_path / "sweep"
    first = runs(sweep / "0", members={2.0: (1.8, 85.0)}, overrides=["experiment=smoke", "seed=0"])
    record = provenance(["run", "-m", "experiment=smoke", "seed=0,1"])
    (first / "provenance.json").write_text(json.dumps(record))
    (first / "results.png").write_bytes(b"\x89PNG\r\n")
    (first / "metrics.jsonl").write_text('{"member": "dense"}\n')
    (first / "latency_table.json").write_text("{}")
    (first / "family" / "2x" / "model.safetensors").write_bytes(b"weights")  # never copied
    (first / "database").mkdir()
    (first / "database" / "db.pt").write_bytes(b"db")
    runs(sweep / "1", members={2.0: (1.7, 84.0)}, overrides=["experiment=smoke", "seed=1"])
    failed = runs(sweep / "2", members={}, finished=False, method="magnitude", overrides=["experiment=smoke"])
    (failed / "FAILED").write_text("RuntimeError: boom\n")
    return sweep


def test_publish_writes_a_self_contained_copy(tmp_path: Path, runs: MakeRun) -> None:
    sweep, target = _sweep(tmp_path, runs), tmp_path / "results" / "smoke"
    (target / "runs" / "99-stale").mkdir(parents=True)
    (target / "runs" / "99-stale" / "results.md").write_text("old")
    (target / "pareto_old_model_cpu.png").write_bytes(b"old")
    (target / "README.md").write_text("hand-written notes\n")

    done = _cli(str(sweep), f"report.publish={target}", out=tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "published" in done.stdout
    assert (sweep / "sweep.md").is_file()  # the normal report still lands beside the runs

    assert (target / "README.md").read_text() == "hand-written notes\n"
    assert not (target / "runs" / "99-stale").exists() and not (target / "pareto_old_model_cpu.png").exists()
    assert {p.name for p in (target / "runs").iterdir()} == {"00-obs-seed-0", "01-obs-seed-1", "02-magnitude"}

    markdown = (target / "sweep.md").read_text()
    assert markdown.startswith(f"# Sweep report: {sweep}\n")  # names the folder it was made from
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown)
    assert images and all((target / image).is_file() for image in images)
    assert (target / "sweep.csv").read_text().startswith("run,status,")

    first = target / "runs" / "00-obs-seed-0"
    assert {p.name for p in first.iterdir()} == {
        "results.md", "results.png", "provenance.json", "overrides.yaml", "metrics.jsonl", "latency_table.json",
    }  # fmt: skip
    assert "seed=0" in (first / "overrides.yaml").read_text()
    assert {p.name for p in (target / "runs" / "01-obs-seed-1").iterdir()} == {"results.md", "overrides.yaml"}
    assert {p.name for p in (target / "runs" / "02-magnitude").iterdir()} == {"overrides.yaml", "FAILED"}
    assert not list(target.rglob("*.safetensors")) and not list(target.rglob("db.pt"))

    index = (target / "publish.md").read_text()
    assert f"# Published report: {sweep}" in index
    assert f"ziplm report {sweep} report.publish={target}" in index
    assert "- command: `ziplm run -m experiment=smoke seed=0,1`" in index
    assert "- overrides: `experiment=smoke seed=1`" in index and "- command: unknown" in index
    assert "no provenance.json" in index and "02-magnitude" in index
    links = re.findall(r"\]\(([^)]+)\)", index)
    assert links and all((target / link).exists() for link in links)

    again = _cli(str(sweep), f"report.publish={target}", out=tmp_path / "out")  # republishing is idempotent
    assert again.returncode == 0, again.stderr
    assert (target / "publish.md").read_text() == index and (target / "README.md").is_file()


@pytest.mark.parametrize(
    ("publish", "message"),
    [
        ("{sweep}", r"report.publish=.*/sweep is inside the report folder"),
        ("{sweep}/published", r"report.publish=.*/sweep/published is inside the report folder"),
        ("{tmp}", r"report.publish=.* holds the report folder"),
        ("{tmp}/file.txt", r"report.publish=.*/file.txt is a file; pass a folder"),
    ],
)
def test_bad_publish_targets_fail_in_one_line(tmp_path: Path, runs: MakeRun, publish: str, message: str) -> None:
    sweep = tmp_path / "sweep"
    runs(sweep / "0", members={2.0: (1.8, 85.0)})
    (tmp_path / "file.txt").write_text("x")
    bad = _cli(str(sweep), f"report.publish={publish.format(sweep=sweep, tmp=tmp_path)}", out=tmp_path / "out")
    assert bad.returncode == 1
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), bad.stderr
    assert "Traceback" not in bad.stderr
    assert not (sweep / "sweep.md").exists()  # refused before anything is written
