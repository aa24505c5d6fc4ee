"""Weights and data that cannot be loaded fail as one clear line saying how to give local ones.

The Hub-only README commands check this end to end through the CLI (tests/test_readme_paths.py); these
are the branches those cannot reach: local folders, and the message built from a Hub dataset error.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
import transformers

from ziplm.data import sources
from ziplm.data.spec import TaskSpec
from ziplm.models.build import ModelSpec, build_model, build_tokenizer, from_source

BERT = ModelSpec(name="mine", family="bert", source="/no/such/folder")


def test_a_missing_local_model_folder_is_named() -> None:
    with pytest.raises(FileNotFoundError, match=r"^model.source=/no/such/folder: no such folder \(the weights"):
        build_model(BERT, "classification", num_labels=2)
    spec = ModelSpec(name="mine", family="bert", source="scratch", tokenizer="./nowhere")
    with pytest.raises(FileNotFoundError, match=r"^model.tokenizer=./nowhere: no such folder \(the tokenizer"):
        build_tokenizer(spec)


def test_a_folder_that_is_no_model_says_why(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=rf"^model.source={tmp_path}: cannot load the weights of model 'x' from"):
        from_source(transformers.BertModel.from_pretrained, str(tmp_path), "weights of model 'x'", "model.source")


def test_an_unreachable_hub_model_says_how_to_give_a_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    with pytest.raises(FileNotFoundError) as caught:
        from_source(offline, "bert-base-uncased", "weights of model 'bert-base'", "model.source")
    message = str(caught.value)
    assert "\n" not in message and "cannot be reached offline" in message
    assert "(model.source=bert-base-uncased)" in message and "model.source=<local folder>" in message


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (ConnectionError("Couldn't reach 'rajpurkar/squad' on the Hub (OfflineModeIsEnabled)"), "reached offline"),
        (datasets.exceptions.DatasetNotFoundError("Dataset 'rajpurkar/sqaud' doesn't exist"), "from the Hugging Face"),
    ],
)
def test_an_unreachable_hub_dataset_says_how_to_give_files(
    monkeypatch: pytest.MonkeyPatch, error: Exception, problem: str
) -> None:
    def load_dataset(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(sources.datasets, "load_dataset", load_dataset)
    keys = ("question", "context")
    task = TaskSpec(
        name="squad",
        kind="qa",
        metric="squad",
        dataset="rajpurkar/squad",
        text_keys=keys,
        label_key="answers",
        doc_stride=32,
    )
    with pytest.raises(FileNotFoundError) as caught:
        sources.load_splits(task)
    message = str(caught.value)
    assert message.startswith("task 'squad': Hub dataset 'rajpurkar/squad' cannot be") and problem in message
    assert "task.data_files='{train: <file>, validation: <file>}'" in message
    assert "column(s) question, context, answers, id as in SQuAD: answers={text: [...], answer_start: [...]}" in message
