"""Tokenized features per task kind, with the offline BERT WordPiece and GPT-2 BPE tokenizers."""

from __future__ import annotations

from typing import Any

import datasets
import pytest
import torch

from ziplm.data.features import build_features, classification_features
from ziplm.data.lm import LM_SEPARATOR, lm_blocks
from ziplm.data.sources import load_splits
from ziplm.data.spec import TaskSpec

PAIRS = datasets.Dataset.from_dict(
    {
        "s1": ["A man plays guitar.", "Kids run."],
        "s2": ["Someone plays music.", "A cat sleeps."],
        "y": [4.2, 0.5],
    }
)


def test_single_text_classification_features(bert_tokenizer: Any) -> None:
    task = TaskSpec(
        name="tiny-cls",
        kind="classification",
        metric="accuracy",
        text_keys=("text",),
        label_key="label",
        num_labels=2,
        max_seq_length=32,
    )
    raw = load_splits(task)["train"]
    features = build_features(raw, bert_tokenizer, task, train=True)
    assert set(features.column_names) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    batch = features[:8]
    assert batch["input_ids"].shape == (8, 32) and batch["input_ids"].dtype == torch.long
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == list(raw["label"][:8])
    assert (batch["input_ids"][:, 0] == bert_tokenizer.cls_token_id).all()
    assert int(batch["token_type_ids"].sum()) == 0
    first = bert_tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()], skip_special_tokens=True)
    assert first.replace(" .", ".") == raw[0]["text"]


def test_sentence_pair_regression_features(bert_tokenizer: Any) -> None:
    features = classification_features(PAIRS, bert_tokenizer, ("s1", "s2"), "y", 24, regression=True)
    row = features[0]
    assert row["labels"].dtype == torch.float32 and row["labels"].item() == pytest.approx(4.2)
    second_segment = row["input_ids"][row["token_type_ids"].bool()]
    assert bert_tokenizer.decode(second_segment, skip_special_tokens=True) == "someone plays music."


def test_truncation_and_gpt2_padding(gpt2_tokenizer: Any) -> None:
    features = classification_features(PAIRS, gpt2_tokenizer, ("s1",), "y", 4, regression=True)
    assert "token_type_ids" not in features.column_names
    assert features[:]["input_ids"].shape == (2, 4)
    padded = classification_features(PAIRS, gpt2_tokenizer, ("s2",), "y", 8, regression=True)[1]
    assert padded["input_ids"][padded["attention_mask"] == 0].eq(gpt2_tokenizer.eos_token_id).all()


def test_lm_blocks_concatenate_rows_into_full_blocks(gpt2_tokenizer: Any) -> None:
    task = TaskSpec(name="tiny-lm", kind="lm", metric="perplexity", text_keys=("text",), max_seq_length=32, stride=16)
    raw = load_splits(task)["train"]
    blocks = build_features(raw, gpt2_tokenizer, task, train=True)
    batch = blocks[:]
    assert batch["input_ids"].shape[1] == 32 and torch.equal(batch["labels"], batch["input_ids"])
    assert bool(batch["attention_mask"].all())
    stream = [i for t in raw["text"] for i in gpt2_tokenizer(t + LM_SEPARATOR)["input_ids"]]
    assert len(blocks) == len(stream) // 32
    assert batch["input_ids"][0].tolist() == stream[:32]


def test_lm_blocks_need_enough_text(gpt2_tokenizer: Any) -> None:
    short = datasets.Dataset.from_dict({"text": ["tiny", "", "   "]})
    with pytest.raises(ValueError, match="too little text for one LM block of 64 tokens"):
        lm_blocks(short, gpt2_tokenizer, "text", 64)
