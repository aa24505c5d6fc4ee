"""Calibration batches: seeded, model inputs only, clear errors."""

from __future__ import annotations

from typing import Any

import datasets
import pytest
import torch

from ziplm.data.calibration import calibration_batches
from ziplm.data.features import build_features
from ziplm.data.sources import load_splits
from ziplm.data.spec import TaskSpec

TASK = TaskSpec(
    name="tiny-cls",
    kind="classification",
    metric="accuracy",
    text_keys=("text",),
    label_key="label",
    num_labels=2,
    max_seq_length=16,
)


@pytest.fixture(scope="module")
def train_features(bert_tokenizer: Any) -> datasets.Dataset:
    return build_features(load_splits(TASK)["train"], bert_tokenizer, TASK, train=True)


def test_batches_are_deterministic_per_seed_and_hold_no_labels(train_features: datasets.Dataset) -> None:
    first = calibration_batches(train_features, num_samples=10, batch_size=4, seed=3)
    again = calibration_batches(train_features, num_samples=10, batch_size=4, seed=3)
    other = calibration_batches(train_features, num_samples=10, batch_size=4, seed=4)
    assert [b["input_ids"].shape for b in first] == [(4, 16), (4, 16), (2, 16)]
    assert all(set(b) == {"input_ids", "attention_mask", "token_type_ids"} for b in first)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, again, strict=True))
    assert not torch.equal(torch.cat([b["input_ids"] for b in first]), torch.cat([b["input_ids"] for b in other]))
    drawn = torch.cat([b["input_ids"] for b in first])
    assert len({tuple(row.tolist()) for row in drawn}) == 10  # drawn without replacement


def test_lm_blocks_give_inputs_without_token_types(gpt2_tokenizer: Any) -> None:
    task = TaskSpec(name="tiny-lm", kind="lm", metric="perplexity", text_keys=("text",), max_seq_length=32, stride=16)
    blocks = build_features(load_splits(task)["train"], gpt2_tokenizer, task, train=True)
    batches = calibration_batches(blocks, num_samples=8, batch_size=8, seed=0)
    assert len(batches) == 1 and set(batches[0]) == {"input_ids", "attention_mask"}


def test_too_few_rows_uses_all_and_warns(train_features: datasets.Dataset) -> None:
    with pytest.warns(UserWarning, match="asked for 1000 calibration samples but the training split has 256"):
        batches = calibration_batches(train_features, num_samples=1000, batch_size=100, seed=0)
    assert sum(len(b["input_ids"]) for b in batches) == 256


def test_invalid_requests_fail(train_features: datasets.Dataset) -> None:
    with pytest.raises(ValueError, match="num_samples >= 1"):
        calibration_batches(train_features, num_samples=0, batch_size=4, seed=0)
    with pytest.raises(ValueError, match="batch_size >= 1"):
        calibration_batches(train_features, num_samples=4, batch_size=0, seed=0)
    with pytest.raises(ValueError, match="empty training split"):
        calibration_batches(train_features.select([]), num_samples=4, batch_size=4, seed=0)
