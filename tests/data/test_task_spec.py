"""The registered task schema is derived from TaskSpec; every shipped task file flattens into a valid spec."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ziplm.config.schema import GROUP_SCHEMAS
from ziplm.data.spec import METRICS, TaskSpec
from ziplm.data.splits import parse_split
from ziplm.eval.metrics import METRICS as METRIC_TABLE

TASK_DIR = Path(__file__).resolve().parents[2] / "conf" / "task"


def test_the_registered_task_schema_has_exactly_the_spec_fields() -> None:
    schema = GROUP_SCHEMAS["task"]
    assert {f.name for f in dataclasses.fields(TaskSpec)} == {f.name for f in dataclasses.fields(schema)}


def test_spec_metric_names_match_the_metric_table() -> None:
    assert set(METRICS) == set(METRIC_TABLE)


@pytest.mark.parametrize("path", sorted(TASK_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_task_file_flattens_into_a_valid_spec(path: Path) -> None:
    values = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert isinstance(values, dict)
    spec = TaskSpec.from_mapping({str(k): v for k, v in values.items()})
    assert spec.name == path.stem
    assert isinstance(spec.text_keys, tuple)
    for split in spec.splits:
        parse_split(split)


def test_sequences_are_frozen_to_tuples() -> None:
    spec = TaskSpec(
        name="x", kind="classification", metric="accuracy", text_keys=["a", "b"], label_key="y", num_labels=2
    )
    assert spec.text_keys == ("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "y"  # type: ignore[misc]


def test_split_properties_put_train_first_without_duplicates() -> None:
    spec = TaskSpec(
        name="mnli",
        kind="classification",
        metric="accuracy",
        text_keys=("p", "h"),
        label_key="label",
        num_labels=3,
        eval_split="validation_matched",
        extra_eval_splits=("validation_mismatched", "validation_matched"),
    )
    assert spec.eval_splits == ("validation_matched", "validation_mismatched")
    assert spec.splits == ("train", "validation_matched", "validation_mismatched")


_BASE = {
    "name": "t",
    "kind": "classification",
    "metric": "accuracy",
    "text_keys": ("text",),
    "label_key": "label",
    "num_labels": 2,
    "max_seq_length": 128,
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "ranking"}, "unknown kind"),
        ({"metric": "bleu"}, "unknown metric"),
        ({"kind": "qa", "metric": "squad", "text_keys": ("context",)}, "takes 2 text_keys"),
        ({"label_key": None}, "needs a label_key"),
        ({"num_labels": 1}, "num_labels >= 2"),
        ({"data_files": {"train": 3}}, "must be file paths"),
        ({"data_files": "a.csv"}, "must map split names"),
        ({"max_train_samples": 0}, "max_train_samples"),
        (
            {"kind": "lm", "metric": "perplexity", "label_key": None, "max_seq_length": 32, "stride": 64},
            "stride",
        ),
        ({"kind": "qa", "metric": "squad", "text_keys": ("q", "c"), "doc_stride": 128}, "doc_stride"),
    ],
)
def test_inconsistent_tasks_fail_with_a_message(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TaskSpec(**{**_BASE, **changes})


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['text_key'\]"):
        TaskSpec.from_mapping({"name": "t", "kind": "lm", "metric": "perplexity", "text_key": "text"})


@pytest.mark.parametrize(
    ("spec", "rows", "bounds"),
    [
        ("train", 1000, (0, 1000)),
        ("train[:99.5%]", 1000, (0, 995)),
        ("train[99.5%:]", 1000, (995, 1000)),
        ("train[10:20]", 1000, (10, 20)),
        ("train[-10:]", 1000, (990, 1000)),
        ("validation_matched[:50%]", 3, (0, 2)),
        ("train[:5000]", 100, (0, 100)),
    ],
)
def test_split_slices_resolve_to_row_bounds(spec: str, rows: int, bounds: tuple[int, int]) -> None:
    assert parse_split(spec).bounds(rows) == bounds


def test_unparsable_split_strings_fail() -> None:
    with pytest.raises(ValueError, match="cannot parse split"):
        parse_split("train+test")


def test_local_files_replace_the_hub_dataset_and_unset_splits_are_dropped() -> None:
    # `task=sst2 task.data_files.train=a.csv ...` composes the Hub dataset *and* local files: local wins.
    spec = TaskSpec.from_mapping(
        {**_BASE, "dataset": "nyu-mll/glue", "subset": "sst2",
         "data_files": {"train": "a.csv", "validation": "b.csv", "test": None}}
    )  # fmt: skip
    assert spec.data_files == {"train": "a.csv", "validation": "b.csv"}
    assert spec.dataset is None and spec.subset is None
    unset = TaskSpec.from_mapping({**_BASE, "dataset": "nyu-mll/glue", "data_files": {"train": None}})
    assert unset.data_files is None and unset.dataset == "nyu-mll/glue"
