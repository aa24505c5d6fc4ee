"""Tokenize raw splits into model features, per task kind.

Every builder returns a ``datasets.Dataset`` whose model columns are torch-formatted, padded to
``max_seq_length`` so the default ``DataLoader`` collate works: ``input_ids``, ``attention_mask``,
``token_type_ids`` (when the tokenizer makes them) and the training targets (``labels``, or
``start_positions``/``end_positions`` for QA).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import torch

from ziplm.data.embedding import embedding_features
from ziplm.data.lm import lm_blocks, lm_eval_windows
from ziplm.data.qa import qa_eval_features, qa_train_features
from ziplm.data.spec import TaskSpec

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_input_columns(features: datasets.Dataset) -> list[str]:
    """The model-input columns `features` has, in ``MODEL_INPUTS`` order."""
    return [c for c in MODEL_INPUTS if c in features.column_names]


def with_torch_format(features: datasets.Dataset, targets: tuple[str, ...]) -> datasets.Dataset:
    """Torch-format the model inputs and `targets`; other columns stay reachable via ``with_format(None)``."""
    columns = model_input_columns(features) + [t for t in targets if t in features.column_names]
    return features.with_format("torch", columns=columns)


def classification_features(
    dataset: datasets.Dataset,
    tokenizer: Any,
    text_keys: Sequence[str],
    label_key: str,
    max_seq_length: int,
    regression: bool = False,
) -> datasets.Dataset:
    """Tokenize single texts or sentence pairs, padded and truncated to `max_seq_length`.

    Args:
        dataset: Rows with the `text_keys` columns and a `label_key` column.
        tokenizer: A HF tokenizer (its pad token must be set: GPT-2's is its EOS).
        text_keys: One text column or a pair (first, second segment).
        label_key: Class ids (int64 ``labels``) or, with `regression`, scores (float32 ``labels``).
        max_seq_length: Sequence length L of every feature.
        regression: Whether labels are real-valued.

    Returns:
        Torch-formatted features: ``input_ids``/``attention_mask``/(``token_type_ids``) of shape (L,)
        and a scalar ``labels`` per row.
    """
    keys = list(text_keys)

    def tokenize(batch: dict[str, list]) -> dict[str, Any]:
        texts = [list(batch[k]) for k in keys]
        encoded = tokenizer(*texts, padding="max_length", truncation=True, max_length=max_seq_length)
        labels = list(batch[label_key])
        encoded["labels"] = [float(v) for v in labels] if regression else [int(v) for v in labels]
        return dict(encoded)

    features = dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc="tokenize")
    label_dtype = "float32" if regression else "int64"
    features = features.cast_column("labels", datasets.Value(label_dtype))
    return with_torch_format(features, ("labels",))


def build_features(dataset: datasets.Dataset, tokenizer: Any, task: TaskSpec, train: bool) -> datasets.Dataset:
    """Features of one split of `task` (dispatch on ``task.kind``).

    Args:
        dataset: A split from ``load_splits``.
        tokenizer: A HF tokenizer (fast, for QA offsets).
        task: The task.
        train: Training features (QA: answer positions; LM: contiguous blocks with ``labels``) or
            evaluation features (QA: ``offset_mapping``/``example_id`` kept for post-processing; LM:
            sliding windows whose ``labels`` are -100 on context tokens).

    Returns:
        A torch-formatted ``datasets.Dataset``; see the kind-specific builders for its columns.
    """
    length = task.max_seq_length
    if task.kind in ("classification", "regression"):
        return classification_features(
            dataset,
            tokenizer,
            task.text_keys,
            str(task.label_key),
            length,
            regression=task.kind == "regression",
        )
    if task.kind == "qa":
        question, context = task.text_keys
        builder = qa_train_features if train else qa_eval_features
        return builder(dataset, tokenizer, question, context, str(task.label_key), length, task.doc_stride)
    if task.kind == "lm":
        if train:
            return lm_blocks(dataset, tokenizer, task.text_keys[0], length)
        return lm_eval_windows(dataset, tokenizer, task.text_keys[0], length, task.stride)
    if task.kind == "embedding":  # raw text (pairs: both sides), the same for training and evaluation
        return embedding_features(dataset, tokenizer, task.text_keys, length)
    raise ValueError(f"task {task.name!r}: unknown kind {task.kind!r}")


def as_batch(features: datasets.Dataset) -> dict[str, torch.Tensor]:
    """All rows of torch-formatted `features` as one batch dict of stacked tensors, each (N, ...)."""
    rows = features[:]
    return {k: v for k, v in rows.items() if isinstance(v, torch.Tensor)}
