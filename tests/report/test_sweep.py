"""collect_runs + write_sweep_report on synthetic run folders: statuses, failures, CSV/MD content, references."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from ziplm.report.sweep import collect_runs, report_group, write_failure
from ziplm.report.sweep_render import CSV_COLUMNS, PUBLISHED, _series, write_sweep_report

MakeRun = Callable[..., Path]  # the `runs` fixture of tests/report/conftest.py

SWEEP = "multirun/smoke/2026-01-01_00-00-00"
REFERENCE = {
    "source": "Kurtic et al. 2023",
    "rows": [
        {"method": "CoFi", "citation": "Xia et al. 2022", "task": "tiny-cls", "hardware": "v100-b128",
         "speedup": 2.0, "metric_name": "accuracy", "metric": 89.1},
        {"method": "CoFi", "citation": "Xia et al. 2022", "task": "squad", "speedup": 2.0, "metric": 1.0},
        {"method": "MobileBERT", "speedup": None, "metric": 90.0, "note": "no speedup given"},
    ],
    "claims": ["ignored"],
}  # fmt: skip


@pytest.fixture
def tree(tmp_path: Path, runs: MakeRun) -> Path:
    """Single run + a 6-job sweep (finished, FAILED, traceback, incomplete, finished) + other commands' runs."""
    out = tmp_path / "outputs"
    members = {1.5: (1.4, 89.0), 2.0: (1.9, 87.0)}
    runs(out / "run/smoke/2026-01-01_00-00-00", members=members, reference=REFERENCE, overrides=["experiment=smoke"])
    sweep = out / SWEEP
    common = ["experiment=smoke", "output_root=/x"]
    for job, method in ((0, "obs"), (10, "random")):
        runs(sweep / str(job), method=method, members=members, reference=REFERENCE,
             overrides=[*common, f"pruner.method={method}"])  # fmt: skip
    failed = runs(sweep / "1", members={}, dense_metric=None, finished=False, overrides=[*common, "seed=1"])
    try:
        raise ValueError("speedup targets must be finite and > 1, got [0.5]")
    except ValueError as err:
        write_failure(failed, err)
    crashed = runs(sweep / "2", members={}, finished=False, overrides=[*common, "seed=2"])
    (crashed / "ziplm.log").write_text(
        '[00:00:01][ziplm][INFO] start\nTraceback (most recent call last):\n  File "x.py", line 1\n'
        "RuntimeError: CUDA out of memory\n"
    )
    runs(sweep / "3", members={1.5: (1.45, 88.0)}, finished=False, overrides=[*common, "seed=3"])
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    runs(out / "latency/default/2026-01-01_00-00-00", command="latency", members={})
    broken = out / "run/smoke/2026-01-02_00-00-00/.hydra"
    broken.mkdir(parents=True)
    (broken / "config.yaml").write_text("model: [unclosed\n")
    return out


def test_collects_every_run_with_its_status(tree: Path) -> None:
    table = collect_runs(tree)
    status = {run.path: (run.status, run.reason) for run in table.runs}
    assert [run.path for run in table.runs] == [
        *(f"{SWEEP}/{n}" for n in (0, 1, 2, 3, 10)),
        "run/smoke/2026-01-01_00-00-00",
    ]  # natural order: job 10 after job 3
    assert status[f"{SWEEP}/0"] == ("finished", None)
    assert status[f"{SWEEP}/1"] == ("failed", "ValueError: speedup targets must be finite and > 1, got [0.5]")
    assert status[f"{SWEEP}/2"] == ("failed", "RuntimeError: CUDA out of memory")
    assert status[f"{SWEEP}/3"][0] == "incomplete" and "1 of 2 members done" in str(status[f"{SWEEP}/3"][1])
    assert [run.path for run in table.failures] == [f"{SWEEP}/{n}" for n in (1, 2, 3)]
    assert table.skipped == ["latency/default/2026-01-01_00-00-00 (latency)"]
    assert len(table.warnings) == 1 and "2026-01-02_00-00-00: unreadable .hydra/config.yaml" in table.warnings[0]
    methods = {run.path: run.method for run in table.runs}
    assert methods[f"{SWEEP}/10"] == "random" and methods[f"{SWEEP}/0"] == "obs"
    assert table.runs[0].overrides == ("experiment=smoke", "output_root=/x", "pruner.method=obs")  # no command=


def test_records_include_dense_members_and_partial_runs(tree: Path) -> None:
    table = collect_runs(tree)
    by_run: dict[str, list[str]] = {}
    for r in table.records:
        by_run.setdefault(r.run.path, []).append(r.member)
    assert by_run[f"{SWEEP}/0"] == ["dense", "1.5x", "2x"]
    assert by_run[f"{SWEEP}/3"] == ["dense", "1.5x"]  # finished members of an incomplete run are real results
    assert f"{SWEEP}/1" not in by_run
    member = next(r for r in table.records if r.run.path == f"{SWEEP}/0" and r.member == "2x")
    assert (member.target, member.measured, member.metric, member.parameters) == (2.0, 1.9, 87.0, 500000)
    assert member.deviation == pytest.approx(1.9 / 2.0 - 1) and member.predicted == pytest.approx(2.02)
    dense = next(r for r in table.records if r.run.path == f"{SWEEP}/0" and r.member == "dense")
    assert (dense.target, dense.predicted, dense.measured, dense.deviation) == (None, 1.0, 1.0, None)


def test_csv_has_one_row_per_record_and_marks_references(tree: Path, tmp_path: Path) -> None:
    table = collect_runs(tree)
    report = write_sweep_report(table, tmp_path / "report")
    rows = list(csv.DictReader(report.csv.open()))
    assert tuple(rows[0]) == CSV_COLUMNS
    measured = [r for r in rows if r["kind"] == "measured"]
    published = [r for r in rows if r["kind"] == PUBLISHED]
    assert len(measured) == len(table.records) == 3 + 3 + 3 + 1 + 2  # single, 0, 10, 2 (dense only), 3
    row = next(r for r in measured if r["run"] == f"{SWEEP}/10" and r["member"] == "1.5x")
    assert (row["method"], row["target"], row["measured_speedup"], row["metric"], row["metric_name"]) == (
        "random",
        "1.5",
        "1.4",
        "89.0",
        "accuracy",
    )
    assert row["status"] == "finished" and row["overrides"] == "experiment=smoke output_root=/x pruner.method=random"
    # The three jobs carrying the preset share its rows once; the squad row belongs to another task.
    assert [(r["method"], r["measured_speedup"], r["metric"], r["hardware"]) for r in published] == [
        ("CoFi", "2.0", "89.1", "v100-b128"),
        ("MobileBERT", "", "90.0", ""),
    ]
    assert published[0]["citation"] == "Xia et al. 2022" and published[1]["citation"] == "Kurtic et al. 2023"


def test_markdown_lists_groups_failures_and_published_rows(tree: Path, tmp_path: Path) -> None:
    report = write_sweep_report(collect_runs(tree), tmp_path / "report")
    md = report.markdown.read_text()
    assert "6 runs: 3 finished, 2 failed, 1 incomplete" in md
    assert (
        "## tiny-bert · tiny-cls · cpu" in md
        and "![accuracy vs measured speedup](pareto_tiny-bert_tiny-cls_cpu.png)" in md
    )
    assert "Overrides shared by every run: `experiment=smoke`" in md
    assert (
        f"| {SWEEP}/1 | failed | tiny-bert | tiny-cls | output_root=/x seed=1 | ValueError: speedup targets must" in md
    )
    assert f"| {SWEEP}/2 | failed |" in md and "RuntimeError: CUDA out of memory" in md
    assert f"| {SWEEP}/3 | incomplete |" in md
    # CoFi's 2.0x lies beyond the fastest measured ZipLM member (1.9x): no gap is claimed by extrapolation.
    assert f"CoFi ({PUBLISHED}) | Xia et al. 2022 | v100-b128 | 2.00× | accuracy | 89.10 | — | — |" in md
    assert "| 1.5x | 1.50× | 1.52× | 1.40× | -6.7% | 0.67 | 89.00 |" in md
    assert "Skipped (not pruning runs): latency/default/2026-01-01_00-00-00 (latency)" in md
    assert "## Warnings" in md
    assert [p.name for p in report.plots] == ["pareto_tiny-bert_tiny-cls_cpu.png"]
    assert report.plots[0].stat().st_size > 5000


def test_references_can_be_left_out(tree: Path, tmp_path: Path) -> None:
    report = write_sweep_report(collect_runs(tree), tmp_path / "report", references=False)
    assert PUBLISHED not in report.csv.read_text()
    assert "CoFi" not in report.markdown.read_text()


def test_one_plot_per_model_task_hardware(tmp_path: Path, runs: MakeRun) -> None:
    members = {2.0: (1.8, 80.0)}
    runs(tmp_path / "a", members=members)
    runs(tmp_path / "b", members=members, hardware="a100", model="bert base/uncased")
    runs(tmp_path / "c", members=members, hardware="a100", model="bert base/uncased", method="magnitude")
    report = write_sweep_report(collect_runs(tmp_path), tmp_path)
    assert sorted(p.name for p in report.plots) == [
        "pareto_bert-base-uncased_tiny-cls_a100.png",
        "pareto_tiny-bert_tiny-cls_cpu.png",
    ]
    assert report.markdown.parent == tmp_path


def test_series_per_method_and_schedule_when_mixed(tmp_path: Path, runs: MakeRun) -> None:
    runs(tmp_path / "a", members={2.0: (1.8, 80.0)})
    runs(tmp_path / "b", members={2.0: (1.7, 82.0)}, schedule="gradual")
    series = _series(collect_runs(tmp_path).records)
    assert [(s.label, s.points) for s in series] == [
        ("obs, gradual", [(1.0, 90.0), (1.7, 82.0)]),
        ("obs, oneshot", [(1.0, 90.0), (1.8, 80.0)]),
    ]


def test_perplexity_is_lower_is_better(tmp_path: Path, runs: MakeRun) -> None:
    runs(tmp_path / "a", task="tiny-lm", metric="perplexity", members={2.0: (1.9, 40.0)}, dense_metric=30.0)
    (run,) = collect_runs(tmp_path).runs
    assert (run.metric, run.higher_is_better) == ("perplexity", False)


def test_shorthand_and_malformed_references(tmp_path: Path, runs: MakeRun) -> None:
    shorthand = {"source": "Kurtic et al. 2023, Table 1", "metric": "accuracy", "results": {2.0: 88.0, 3.0: 86.5}}
    runs(tmp_path / "a", members={2.0: (1.8, 80.0)}, reference=shorthand)
    runs(tmp_path / "b", members={2.0: (1.8, 80.0)}, reference={"rows": [{"method": "X", "metric": "high"}]})
    runs(tmp_path / "c", members={2.0: (1.8, 80.0)}, reference={"rows": [{"speedup": 2.0}]})
    table = collect_runs(tmp_path)
    assert [(r.method, r.speedup, r.metric, r.citation) for r in table.references] == [
        ("ZipLM (paper)", 2.0, 88.0, "Kurtic et al. 2023, Table 1"),
        ("ZipLM (paper)", 3.0, 86.5, "Kurtic et al. 2023, Table 1"),
    ]
    assert len(table.warnings) == 2
    assert "b: reference block ignored: metric of X must be a number, got 'high'" in table.warnings[0]
    assert "c: reference block ignored: reference row {'speedup': 2.0} lacks ['method', 'metric']" in table.warnings[1]


def test_failure_marker_has_reason_then_traceback(tmp_path: Path) -> None:
    try:
        raise FileNotFoundError("no such file: data.csv\nsecond line")
    except FileNotFoundError as err:
        path = write_failure(tmp_path, err)
    lines = path.read_text().splitlines()
    assert lines[0] == "FileNotFoundError: no such file: data.csv"
    assert lines[2] == "Traceback (most recent call last):"


def test_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no such folder: .*nowhere; pass a run folder or a sweep folder"):
        collect_runs(tmp_path / "nowhere")


def test_report_group_follows_the_sweep(tree: Path, tmp_path: Path, runs: MakeRun) -> None:
    assert report_group(collect_runs(tree / SWEEP)) == "smoke/2026-01-01_00-00-00"  # as RunLabels.group of its jobs
    assert report_group(collect_runs(tree)) == "smoke"
    runs(tmp_path / "mixed" / "a", name="one")
    runs(tmp_path / "mixed" / "b", name="two")
    assert report_group(collect_runs(tmp_path / "mixed")) == "report/mixed"


def test_root_that_is_itself_a_run(tmp_path: Path, runs: MakeRun) -> None:
    run = runs(tmp_path / "r", members={2.0: (1.8, 80.0)})
    table = collect_runs(run)
    assert [r.path for r in table.runs] == ["."]
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert config["cache_dir"] == "${output_root}/cache"  # read as saved; interpolations are not needed


def test_the_gap_reads_the_ziplm_front_at_the_reference_speedup(tree: Path) -> None:
    from ziplm.report.references import ReferenceRow
    from ziplm.report.sweep_render import _family_at

    table = collect_runs(tree)
    obs = [r for r in table.records if r.run.method == "obs"]
    ref = ReferenceRow("tiny-bert", "tiny-cls", "cpu", "X", "Y 2020", speedup=1.65, metric=80.0, metric_name="accuracy")
    # ZipLM points: 1.4x 89.0, 1.45x 88.0, 1.9x 87.0 (random's members are not ZipLM's): 88 - 0.2/0.45 at 1.65x.
    assert _family_at(obs, ref) == pytest.approx(88.0 - 0.2 / 0.45)
    assert _family_at(table.records, ref) == pytest.approx(88.0 - 0.2 / 0.45)
    other = ReferenceRow("tiny-bert", "tiny-cls", "cpu", "X", "Y 2020", speedup=1.65, metric=1.0, metric_name="f1")
    assert _family_at(table.records, other) is None  # another metric
