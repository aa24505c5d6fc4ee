"""Language-modelling features: training blocks and sliding-window perplexity windows.

Training follows HF's ``run_clm``: rows are tokenized, concatenated and cut into blocks of
``block_size`` tokens (the remainder of each 1000-row group is dropped), ``labels = input_ids``.
Evaluation follows HF's fixed-length perplexity recipe: the split's rows joined by ``"\\n\\n"`` form one
token stream; windows of ``max_length`` tokens start every ``stride`` tokens and score only the tokens
no earlier window scored, the rest of the window serving as context (labels -100).
"""

from __future__ import annotations

import itertools
from typing import Any

import datasets
import torch

IGNORE_INDEX = -100  # label value HF losses skip
LM_SEPARATOR = "\n\n"  # between rows (documents, articles, lines), as in HF's perplexity recipe


def lm_blocks(
    dataset: datasets.Dataset, tokenizer: Any, text_key: str, block_size: int, rows_per_group: int = 1000
) -> datasets.Dataset:
    """Concatenate the rows' tokens and cut them into training blocks.

    Blank rows are skipped; every other row is followed by ``LM_SEPARATOR`` so documents do not run
    together. No special tokens are added (a BERT tokenizer would insert [CLS]/[SEP] per row).

    Args:
        dataset: Rows with a `text_key` column.
        tokenizer: A HF tokenizer.
        text_key: Text column.
        block_size: Tokens per block, B.
        rows_per_group: Rows concatenated together before cutting (bounds memory on large corpora).

    Returns:
        Torch-formatted ``input_ids``, ``attention_mask`` (all ones) and ``labels`` (= ``input_ids``),
        each of shape (B,).

    Raises:
        ValueError: if the split has fewer than `block_size` tokens in every group.
    """

    def group(batch: dict[str, list]) -> dict[str, list]:
        texts = [t + LM_SEPARATOR for t in batch[text_key] if t and not t.isspace()]
        ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []
        flat = list(itertools.chain.from_iterable(ids))
        blocks = [flat[i : i + block_size] for i in range(0, len(flat) - block_size + 1, block_size)]
        return {"input_ids": blocks, "attention_mask": [[1] * block_size for _ in blocks], "labels": blocks}

    features = dataset.map(
        group,
        batched=True,
        batch_size=rows_per_group,
        remove_columns=dataset.column_names,
        desc="group texts",
    )
    if len(features) == 0:
        raise ValueError(f"too little text for one LM block of {block_size} tokens ({len(dataset)} rows)")
    return features.with_format("torch")


def lm_token_stream(dataset: datasets.Dataset, tokenizer: Any, text_key: str) -> torch.Tensor:
    """The evaluation token stream: all rows joined by ``LM_SEPARATOR``, tokenized once. Shape (N,)."""
    text = LM_SEPARATOR.join(list(dataset[text_key]))
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def sliding_windows(ids: torch.Tensor, max_length: int, stride: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut a token stream into perplexity windows (HF's fixed-length model recipe).

    Window k covers ``ids[k*stride : k*stride + max_length]``; its labels are -100 on the tokens an
    earlier window already scored, so every position of `ids` carries a real label in exactly one
    window. (The model shifts labels, so the stream's very first token is never predicted: N - 1
    tokens are scored in all.)

    Args:
        ids: Token stream, shape (N,), N >= 1.
        max_length: Window length (the model's context), W.
        stride: New tokens per window, 1 <= stride <= W; W - stride tokens of context per window.

    Returns:
        ``(input_ids, labels)`` pairs, each of shape (w,) with w <= W (only the last may be shorter).
    """
    if not 0 < stride <= max_length:
        raise ValueError(f"stride must be in [1, max_length={max_length}], got {stride}")
    n = int(ids.numel())
    if n == 0:
        raise ValueError("cannot score an empty token stream")
    windows = []
    scored_until = 0
    for begin in range(0, n, stride):
        end = min(begin + max_length, n)
        inputs = ids[begin:end]
        labels = inputs.clone()
        labels[: scored_until - begin] = IGNORE_INDEX  # tokens a previous window scored: context only
        windows.append((inputs, labels))
        scored_until = end
        if end == n:
            break
    return windows


def lm_eval_windows(
    dataset: datasets.Dataset, tokenizer: Any, text_key: str, max_length: int, stride: int
) -> datasets.Dataset:
    """Sliding perplexity windows of a split, right-padded to `max_length` so they batch.

    Padding is harmless for a causal LM (later positions never affect earlier ones) and is excluded
    from scoring by ``labels = -100`` and ``attention_mask = 0``.

    Returns:
        Torch-formatted ``input_ids``, ``attention_mask`` and ``labels``, each of shape (W,).
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for inputs, labels in sliding_windows(lm_token_stream(dataset, tokenizer, text_key), max_length, stride):
        pad = max_length - inputs.numel()
        rows["input_ids"].append(inputs.tolist() + [pad_id] * pad)
        rows["attention_mask"].append([1] * inputs.numel() + [0] * pad)
        rows["labels"].append(labels.tolist() + [IGNORE_INDEX] * pad)
    return datasets.Dataset.from_dict(rows).with_format("torch")
