"""Experiment presets: each composes from its own command, carries well-formed published references, and
(slow) runs to completion with tiny overrides.

The published numbers below are transcribed from design/ziplm-method.md §7 (the only source the presets
may quote); a preset row that disagrees with them, or one quoting a number they lack, fails here.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from ziplm.config.baselines import parse_baselines
from ziplm.config.paths import CONF_DIR, EXPERIMENTS_DIR, compose
from ziplm.eval.metrics import METRICS
from ziplm.pruning.methods import METHODS

PRESETS = sorted(EXPERIMENTS_DIR.glob("*.yaml"))
IDS = [p.stem for p in PRESETS]
TASKS = {p.stem for p in (CONF_DIR / "task").glob("*.yaml")}

# design/ziplm-method.md §7: (method, task, speedup) -> metric. `None` speedup: not given there.
PUBLISHED: dict[tuple[str, str, float | None], float] = {
    ("CoFi", "squad", 2.0): 89.1,
    ("CoFi", "squad", 8.7): 82.6,
    ("CoFi", "mnli", 2.1): 85.3,
    ("CoFi", "mnli", 12.1): 80.6,
    ("CoFi", "qnli", 2.1): 91.8,
    ("CoFi", "qnli", 12.1): 86.1,
    ("CoFi", "sst2", 2.1): 93.0,
    ("CoFi", "sst2", 12.2): 90.4,
    ("MobileBERT", "squad", None): 90.0,
    ("DistilGPT2", "wikitext103", None): 21.1,
    ("GPT-2 (dense)", "wikitext103", 1.0): 16.3,
}
PUBLISHED_PARAMS_M = {"DistilGPT2": 82, "GPT-2 (dense)": 124}
CONTEXT = {("BERT-base (dense)", "squad"): 88.5}  # §7: "Dense BERT-base SQuAD F1 ≈ 88.5"
# The presets that must quote every §7 number for their tasks (the miniatures have none).
MUST_QUOTE = {
    "bert-base-squad-gradual": {("CoFi", "squad")},
    "bert-base-glue-gradual": {("CoFi", "sst2"), ("CoFi", "qnli"), ("CoFi", "mnli")},
    "bert-large-squad": {("MobileBERT", "squad")},
    "gpt2-zipgpt2": {("DistilGPT2", "wikitext103"), ("GPT-2 (dense)", "wikitext103")},
}

ROW_KEYS = {"method", "citation", "task", "hardware", "speedup", "metric_name", "metric"}
ROW_OPTIONAL = {"note", "params_m"}
LISTED_KEYS = {"method", "citation", "task"}


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _command(path: Path) -> tuple[str, list[str], list[str]]:
    """Line 2 as (command, overrides, flags)."""
    command, *args = shlex.split(_lines(path)[1].removeprefix("# ziplm "))
    return command, [a for a in args if not a.startswith("-")], [a for a in args if a.startswith("-")]


@cache
def _composed(path: Path) -> DictConfig:
    command, overrides, _ = _command(path)
    return compose(overrides, command=command)


def _reference(path: Path) -> dict[str, Any]:
    container = OmegaConf.to_container(_composed(path).reference, resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _task_headline(task: str) -> str:
    return METRICS[str(OmegaConf.load(CONF_DIR / "task" / f"{task}.yaml").metric)].headline


def _sweep(path: Path) -> dict[str, list[str]]:
    """``hydra.sweeper.params`` of a preset (what ``-m`` expands), as key -> values."""
    params = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params", default=None) or {}
    return {str(k): str(v).split(",") for k, v in params.items()}


def test_presets_exist() -> None:
    expected = {
        "bert-base-squad-gradual", "bert-base-glue-gradual", "bert-large-squad", "gpt2-zipgpt2",
        "bert-base-oneshot", "minilm-bbc-family", "minilm-bbc-baselines", "smoke", "minilm-bbc-students",
        "minilm-bbc-vs-students",
    }  # fmt: skip
    assert expected <= set(IDS)


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
def test_baselines_are_well_formed_and_bound_to_a_task_the_preset_runs(path: Path) -> None:
    """Every ``baselines:`` entry parses; one bound to a task names the preset's task or one of its sweep's."""
    cfg = _composed(path)
    entries = OmegaConf.to_container(cfg.baselines, resolve=True)
    parsed = parse_baselines(entries, TASKS)
    documented = {a.split("=", 1)[1] for line in _lines(path) for a in line.split() if a.startswith("task=")}
    tasks = {str(cfg.task.name)} | {t for value in documented for t in value.split(",")}
    for baseline in parsed:
        assert baseline.task is None or baseline.task in tasks, f"{baseline}: no run of {path.stem} has its task"
        assert baseline.citation and re.search(r"(19|20)\d\d", baseline.citation), f"{baseline}: cite the model"


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
def test_header_and_own_command(path: Path) -> None:
    lines = _lines(path)
    assert lines[0] == "# @package _global_", "line 1 must be the package header (Hydra reads it only first)"
    assert lines[1].startswith("# ziplm "), "line 2 is the exact command that runs this experiment"
    command, overrides, flags = _command(path)
    assert command == "run"
    assert f"experiment={path.stem}" in overrides, "line 2 must name this preset's own file"
    assert ("-m" in flags) == bool(_sweep(path)), "a preset with hydra.sweeper.params runs with -m, and only then"
    cfg = _composed(path)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert cfg.name == path.stem


def check_row(row: dict[str, Any]) -> None:
    """One reference row as the report reads it: the keys, citation with a year, a known task, the
    task's headline metric, numbers where numbers go."""
    assert ROW_KEYS <= set(row) <= ROW_KEYS | ROW_OPTIONAL, f"row keys {sorted(row)}"
    for key in ("method", "citation", "metric_name"):
        assert isinstance(row[key], str) and row[key].strip(), f"{key} of {row}"
    assert re.search(r"(19|20)\d\d", row["citation"]), f"citation without a year: {row['citation']!r}"
    assert row["task"] in TASKS, f"row task {row['task']!r} is not a conf/task option"
    assert row["metric_name"] == _task_headline(row["task"]), f"{row} is not in its task's headline metric"
    assert _is_number(row["metric"]), f"metric of {row} must be a number"
    speedup, hardware, params = row["speedup"], row["hardware"], row.get("params_m", 1)
    assert speedup is None or (_is_number(speedup) and speedup >= 1.0), f"speedup must be a number >= 1 or null: {row}"
    assert hardware is None or (isinstance(hardware, str) and hardware), f"hardware must be a name or null: {row}"
    assert _is_number(params) and params > 0, f"params_m must be a positive number: {row}"


def check_published(row: dict[str, Any]) -> None:
    """The row's numbers are the ones design/ziplm-method.md §7 gives."""
    if (row["method"], row["task"]) in CONTEXT:
        assert row["metric"] == CONTEXT[row["method"], row["task"]], row
        return
    key = (row["method"], row["task"], row["speedup"])
    assert key in PUBLISHED, f"{key} is not a number from design/ziplm-method.md §7"
    assert row["metric"] == PUBLISHED[key], row
    if row["method"] in PUBLISHED_PARAMS_M:
        assert row.get("params_m") == PUBLISHED_PARAMS_M[row["method"]], row


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
def test_reference_block_is_well_formed(path: Path) -> None:
    reference = _reference(path)
    if not reference:
        assert path.stem == "smoke", "every paper preset carries a reference block (rows: [] if none exist)"
        return
    assert set(reference) <= {"source", "rows", "listed", "claims"}, f"unknown keys {sorted(reference)}"
    assert isinstance(reference["source"], str) and reference["source"].strip()
    assert isinstance(reference["rows"], list)
    for row in reference["rows"]:
        check_row(row)
    for entry in reference.get("listed", []):
        assert set(entry) == LISTED_KEYS and entry["task"] in TASKS, entry
        assert re.search(r"(19|20)\d\d", entry["citation"]), entry
    assert all(isinstance(c, str) and c.strip() for c in reference.get("claims", []))


@pytest.mark.parametrize("path", PRESETS, ids=IDS)
def test_reference_numbers_are_the_published_ones(path: Path) -> None:
    rows = _reference(path).get("rows", [])
    for row in rows:
        check_published(row)
    quoted = {(r["method"], r["task"], r["speedup"]) for r in rows}
    for method, task in MUST_QUOTE.get(path.stem, set()):
        wanted = {k for k in PUBLISHED if k[:2] == (method, task)}
        assert wanted <= quoted, f"{path.stem} leaves out published rows {sorted(wanted - quoted, key=str)}"


GOOD_ROW = {"method": "CoFi", "citation": "Xia et al. 2022", "task": "squad", "hardware": "v100-b128",
            "speedup": 2.0, "metric_name": "f1", "metric": 89.1}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metric": "89.1"}, "must be a number"),
        ({"metric": float("nan")}, "must be a number"),
        ({"metric_name": "accuracy"}, "headline metric"),
        ({"task": "squad2"}, "not a conf/task option"),
        ({"citation": "Xia et al."}, "without a year"),
        ({"speedup": 0.5}, "speedup"),
        ({"hardware": 128}, "hardware must be"),
        ({"params_m": "82M"}, "params_m must be"),
        ({"hardware": None, "extra": 1}, "row keys"),
    ],
)
def test_check_row_rejects_bad_rows(change: dict[str, Any], message: str) -> None:
    check_row(GOOD_ROW)
    with pytest.raises(AssertionError, match=message):
        check_row({**GOOD_ROW, **change})


@pytest.mark.parametrize("change", [{"metric": 89.2}, {"speedup": 3.0}, {"method": "TinyBERT"}])
def test_check_published_rejects_numbers_not_in_the_source(change: dict[str, Any]) -> None:
    check_published(GOOD_ROW)
    with pytest.raises(AssertionError):
        check_published({**GOOD_ROW, **change})


def test_glue_preset_covers_the_four_tasks() -> None:
    reference = _reference(EXPERIMENTS_DIR / "bert-base-glue-gradual.yaml")
    tasks = {r["task"] for r in reference["rows"]} | {e["task"] for e in reference["listed"]}
    assert tasks == {"sst2", "qnli", "mnli", "qqp"}
    assert "qqp" not in {r["task"] for r in reference["rows"]}, "§7 gives no QQP numbers"


def _documented_commands(path: Path) -> list[list[str]]:
    """Every further ``ziplm run ...`` command in the preset's comments, its comma lists expanded."""
    commands = []
    for line in _lines(path)[2:]:
        match = re.search(r"#.*?\bziplm (run .*)$", line)
        if not match or "<" in match.group(1):
            continue
        _, *args = shlex.split(match.group(1))
        overrides = [a for a in args if not a.startswith("-")]
        assert f"experiment={path.stem}" in overrides, f"documented command of another preset: {line}"
        choices = [[f"{a.split('=', 1)[0]}={v}" for v in a.split("=", 1)[1].split(",")] for a in overrides]
        commands += [list(c) for c in itertools.product(*choices)]
    return commands


DOCUMENTED = [(p, c) for p in PRESETS for c in _documented_commands(p)]


@pytest.mark.parametrize(("path", "overrides"), DOCUMENTED, ids=[" ".join(c) for _, c in DOCUMENTED])
def test_documented_sweeps_compose(path: Path, overrides: list[str]) -> None:
    cfg = compose(overrides)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    for override in overrides:
        key, value = override.split("=", 1)
        if key in {"task", "hardware", "schedule", "model"}:
            assert cfg[key].name == value


def test_documented_sweeps_are_the_papers() -> None:
    """The sweeps the task list asks for are written in the presets (and composed above)."""
    documented = {" ".join(c) for _, c in DOCUMENTED}
    for task in ("sst2", "qnli", "mnli", "qqp"):
        assert f"experiment=bert-base-glue-gradual task={task}" in documented
    for n in (32, 128, 512, 1024, 4096):
        assert f"experiment=bert-base-oneshot pruner.calibration_samples={n}" in documented
    for hardware in ("cpu", "a100"):
        assert f"experiment=bert-base-oneshot hardware={hardware}" in documented


def test_baseline_sweep_selects_every_known_method() -> None:
    path = EXPERIMENTS_DIR / "minilm-bbc-baselines.yaml"
    methods = _sweep(path)["pruner.method"]
    assert methods == ["obs", "magnitude", "random", "fisher", "layerdrop"]
    assert set(methods) <= set(METHODS)
    for method in methods:
        assert compose([f"experiment={path.stem}", f"pruner.method={method}"]).pruner.method == method


def test_miniatures_are_offline_on_cpu() -> None:
    for stem in ("minilm-bbc-family", "minilm-bbc-baselines"):
        cfg = _composed(EXPERIMENTS_DIR / f"{stem}.yaml")
        assert (cfg.model.source, cfg.task.name, cfg.task.dataset) == ("packaged:minilm", "bbc-news", None)
        assert (cfg.hardware.device, cfg.trainer.accelerator) == ("cpu", "cpu")
    family = _composed(EXPERIMENTS_DIR / "minilm-bbc-family.yaml").search
    assert list(family.targets) == [1.5, 2.0, 3.0, 4.0]


# --- slow: every preset runs to completion with tiny overrides ------------------------------------


def _tiny_overrides(path: Path) -> list[str]:
    """The preset's own choices, shrunk: tiny model and generated task of the same family, the preset's
    hardware profile timed on the CPU at a tiny shape, one small target."""
    cfg = _composed(path)
    gpt2 = cfg.model.family == "gpt2"
    embedding = cfg.task.kind == "embedding"  # label-free: the preset's own offline text, shrunk
    return [
        "model=tiny-gpt2" if gpt2 else "model=tiny-bert",
        "task=tiny-lm" if gpt2 else f"task={cfg.task.name}" if embedding else "task=tiny-cls",
        "task.max_train_samples=32",
        "task.max_eval_samples=16",
        "task.max_seq_length=32",
        "hardware.device=cpu",
        "hardware.dtype=float32",
        "hardware.batch_size=4",
        "hardware.seq_length=16",
        "hardware.warmup=0",
        "hardware.repetitions=2",
        "trainer=cpu",
        "trainer.batch_size=16",
        "trainer.eval_batch_size=32",
        "logger=none",
        "baselines=[]",  # published checkpoints (Hub) and made-here students: tested in tests/pipelines
        "search.targets=[1.5]",
        "pruner.calibration_samples=16",
        "search.spdy_random_starts=1",
        "search.spdy_local_steps=1",
        "search.spdy_loss_samples=16",
        "search.speedup_rounds=2",
        "search.speedup_corrections=0",  # the fake table is not this machine: tested in tests/pipelines
        f"distill.epochs_per_stage={min(float(cfg.distill.epochs_per_stage), 1.0)}",
        f"teacher.epochs={min(float(cfg.teacher.epochs), 1.0)}",
    ]


def _linear_table(model: Any, env: Any, heads: list[int], ffn: list[int], cache_dir: str, *_: Any) -> tuple:
    """A deterministic latency table (attention 0.1, FFN 0.3 per layer, T_base 1.0): timing a tiny model
    on a shared CPU is noise, and measurement has its own tests (tests/latency)."""
    from ziplm.core.latency import LatencyTable

    table = LatencyTable(
        environment={"fake": True},
        base_time=1.0,
        attention={k: 0.1 * k / max(heads) for k in heads},
        ffn={m: 0.3 * m / max(ffn) for m in ffn},
    )
    target = Path(cache_dir) / "latency" / "linear.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    table.save(target)
    return table, target, False


def _methods(path: Path) -> list[str | None]:
    """One slow run per method a preset sweeps (None: the preset's own method)."""
    return list(_sweep(path).get("pruner.method", [])) or [None]


RUNS = [(p, m) for p in PRESETS for m in _methods(p)]


@pytest.mark.slow
@pytest.mark.parametrize(("path", "method"), RUNS, ids=[p.stem + (f"-{m}" if m else "") for p, m in RUNS])
def test_preset_runs_to_completion(
    path: Path, method: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ziplm.pipelines import prune

    out = tmp_path / "run"
    out.mkdir(parents=True)
    monkeypatch.setattr(prune, "run_dir", lambda cfg: out)
    monkeypatch.setattr(prune, "load_or_measure", _linear_table)
    _, overrides, _ = _command(path)
    extra = [f"pruner.method={method}"] if method else []
    cfg = compose([*overrides, *_tiny_overrides(path), *extra, f"output_root={tmp_path}", f"cache_dir={tmp_path}/c"])
    assert cfg.name == path.stem and cfg.hardware.name == _composed(path).hardware.name  # the profile stays
    prune.run_prune(cfg)

    record = json.loads((out / "family" / "1.5x" / "metrics.json").read_text())
    metric = METRICS[str(cfg.task.metric)].headline
    assert record["predicted_speedup"] >= 1.5 * (1 - 1e-9)
    assert _is_number(record[f"metric/{metric}"]) and record["measured_speedup"] > 0
    assert (out / "results.md").is_file()
    manifests = list(out.glob("**/database/manifest.json"))
    if (method or cfg.pruner.method) == "layerdrop":  # whole layers from the latency table: no database
        assert not manifests and record["layers_kept"]
        return
    assert manifests, "no OBS database was built"
    for manifest in manifests:
        assert json.loads(manifest.read_text())["fingerprint"]["method"] == (method or cfg.pruner.method)


def test_readme_table_lists_every_preset_with_its_command() -> None:
    readme = (EXPERIMENTS_DIR / "README.md").read_text()
    table = readme.split("## Reproduce the paper", 1)[1].split("\n## ", 1)[0]
    for path in PRESETS:
        command = _lines(path)[1].removeprefix("# ")
        assert f"| `{path.stem}` |" in table and f"`{command}`" in table, f"{path.stem} missing from the table"
