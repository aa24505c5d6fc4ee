"""The whole Hydra config tree composes, and mistakes fail at compose time with a useful message."""

from __future__ import annotations

import shlex
from functools import cache
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

from ziplm.config.paths import CONF_DIR, EXPERIMENTS_DIR, compose
from ziplm.config.schema import GROUP_SCHEMAS

GROUP_OPTIONS = [
    (group, path.stem) for group in sorted(GROUP_SCHEMAS) for path in sorted((CONF_DIR / group).glob("*.yaml"))
]
EXPERIMENTS = sorted(EXPERIMENTS_DIR.glob("*.yaml"))
NAMED_GROUPS = {"model", "task", "hardware", "schedule"}  # their schemas carry a `name`


@cache
def compose_one(override: str) -> DictConfig:
    """Composing costs ~0.3 s; the per-option and GLUE tests share results (read-only)."""
    return compose([override])


def test_every_schema_group_has_a_folder() -> None:
    # experiment/ links to experiments/; hydra/ holds Hydra's own options (launchers, callbacks), no schema
    folders = {p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in ("experiment", "hydra")}
    assert folders == set(GROUP_SCHEMAS)
    assert (CONF_DIR / "experiment").resolve() == EXPERIMENTS_DIR.resolve()


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_group_option_composes(group: str, option: str) -> None:
    path = CONF_DIR / group / f"{option}.yaml"
    header = OmegaConf.load(path)
    # A `_global_` option (schedule=gradual sets search/pruner/distill keys) places its own schema explicitly.
    own = f"{group}_schema@{group}" if path.read_text().startswith("# @package _global_") else f"{group}_schema"
    assert list(header.defaults) == [own, "_self_"], "schema first, so typos fail"

    cfg = compose_one(f"{group}={option}")
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # no ??? left, all resolvable
    if group in NAMED_GROUPS:
        assert cfg[group].name == option


def test_defaults() -> None:
    cfg = compose()
    assert cfg.command == "run"
    chosen = {g: cfg[g].name for g in NAMED_GROUPS}
    assert chosen == {"model": "minilm", "task": "bbc-news", "hardware": "cpu", "schedule": "oneshot"}
    assert cfg.logger.kind == "wandb" and cfg.logger.mode == "offline"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_every_experiment_composes_from_its_own_command(path: Path) -> None:
    lines = path.read_text().splitlines()
    # Hydra reads `# @package` only in the file's leading block of `# @` lines: it must come first.
    assert lines[0] == "# @package _global_"
    assert lines[1].startswith("# ziplm "), "line 2 is the exact command that runs this experiment"

    command, *overrides = shlex.split(lines[1].removeprefix("# ziplm "))
    overrides = [arg for arg in overrides if not arg.startswith("-")]
    assert f"experiment={path.stem}" in overrides
    cfg = compose(overrides, command=command)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert cfg.name == path.stem


def test_experiment_overrides_defaults_and_command_line_overrides_experiment() -> None:
    cfg = compose(["experiment=smoke"])
    assert (cfg.model.name, cfg.task.name, cfg.logger.kind) == ("tiny-bert", "tiny-cls", "none")
    cfg = compose(["experiment=smoke", "model=tiny-gpt2", "hardware.batch_size=3"])
    assert (cfg.model.name, cfg.hardware.batch_size, cfg.task.name) == ("tiny-gpt2", 3, "tiny-cls")


def _message(exc: BaseException) -> str:
    return f"{exc}\n{exc.__cause__}"


def test_misspelt_key_fails_at_compose_time() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose(["model.hiden_size=3"])
    assert "Key 'hiden_size' not in 'ModelSchema'" in _message(info.value)


def test_wrongly_typed_value_fails_at_compose_time() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose(["hardware.batch_size=many"])
    assert "batch_size" in _message(info.value)


def test_unknown_option_lists_the_real_ones() -> None:
    with pytest.raises(MissingConfigException) as info:
        compose(["model=nope"])
    message = _message(info.value)
    assert "model/nope" in message
    assert "tiny-bert" in message and "bert-base" in message


# task -> (text keys, num_labels, metric, kind); metrics follow the paper where it reports the task
# (accuracy for SST-2, QNLI, MNLI, QQP) and the GLUE convention elsewhere.
GLUE = {
    "sst2": (["sentence"], 2, "accuracy", "classification"),
    "qnli": (["question", "sentence"], 2, "accuracy", "classification"),
    "mnli": (["premise", "hypothesis"], 3, "accuracy", "classification"),
    "qqp": (["question1", "question2"], 2, "accuracy_f1", "classification"),  # headline accuracy, F1 beside it
    "cola": (["sentence"], 2, "matthews", "classification"),
    "mrpc": (["sentence1", "sentence2"], 2, "f1", "classification"),
    "stsb": (["sentence1", "sentence2"], 1, "pearson_spearman", "regression"),
    "rte": (["sentence1", "sentence2"], 2, "accuracy", "classification"),
}


@pytest.mark.parametrize("name", sorted(GLUE))
def test_glue_tasks(name: str) -> None:
    task = compose_one(f"task={name}").task
    text_keys, num_labels, metric, kind = GLUE[name]
    assert (task.dataset, task.subset, task.label_key) == ("nyu-mll/glue", name, "label")
    assert (list(task.text_keys), task.num_labels, task.metric, task.kind) == (
        text_keys,
        num_labels,
        metric,
        kind,
    )
    if name == "mnli":
        assert task.eval_split == "validation_matched"
        assert list(task.extra_eval_splits) == ["validation_mismatched"]
    else:
        assert task.eval_split == "validation"
