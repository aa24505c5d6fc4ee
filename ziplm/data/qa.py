"""Extractive QA (SQuAD v1.1): windowed features and span post-processing.

Follows HF's ``run_qa``: the question comes first and only the context is truncated; a long context
becomes several windows overlapping by ``doc_stride`` tokens. Training windows that do not contain the
whole answer point at the [CLS] token. Evaluation windows keep, per token, its character span in the
context (None outside the context) and the id of their example, so ``postprocess_qa`` can map the
best (start, end) token pair back to text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import datasets
import numpy as np
import torch

Offsets = Sequence[Sequence[int] | None]


def _tokenize_windows(
    examples: Mapping[str, list],
    tokenizer: Any,
    question: str,
    context: str,
    max_length: int,
    doc_stride: int,
) -> Any:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("QA features need a fast tokenizer (offset mappings)")
    return tokenizer(
        [q.lstrip() for q in examples[question]],  # leading spaces only waste window room
        list(examples[context]),
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )


def _answer_positions(encoded: Any, i: int, answers: Mapping[str, Sequence[Any]], cls_index: int) -> tuple[int, int]:
    """(start, end) token positions of the first answer in window `i`, or the CLS index twice."""
    if len(answers["answer_start"]) == 0:
        return cls_index, cls_index
    start_char = int(answers["answer_start"][0])
    end_char = start_char + len(answers["text"][0])
    offsets = encoded["offset_mapping"][i]
    context_tokens = [t for t, s in enumerate(encoded.sequence_ids(i)) if s == 1]
    first, last = context_tokens[0], context_tokens[-1]
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
        return cls_index, cls_index  # the answer is not (wholly) inside this window
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def qa_train_features(
    dataset: datasets.Dataset,
    tokenizer: Any,
    question: str,
    context: str,
    answers: str,
    max_length: int,
    doc_stride: int,
) -> datasets.Dataset:
    """Training windows with answer token positions.

    Args:
        dataset: SQuAD-format rows: `question`, `context`, `answers` (``{"text": [...],
            "answer_start": [...]}``; the first answer is the target).
        tokenizer: A fast HF tokenizer padding on the right.
        question: Question column.
        context: Context column.
        answers: Answers column.
        max_length: Window length L.
        doc_stride: Overlap in tokens between consecutive windows of one context.

    Returns:
        Torch-formatted ``input_ids``/``attention_mask``/(``token_type_ids``) of shape (L,) and scalar
        ``start_positions``/``end_positions`` (the CLS index where the answer is outside the window).
    """

    def prepare(batch: dict[str, list]) -> dict[str, Any]:
        encoded = _tokenize_windows(batch, tokenizer, question, context, max_length, doc_stride)
        starts, ends = [], []
        for i, example in enumerate(encoded["overflow_to_sample_mapping"]):
            ids = encoded["input_ids"][i]
            cls_index = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
            start, end = _answer_positions(encoded, i, batch[answers][example], cls_index)
            starts.append(start)
            ends.append(end)
        out = {k: v for k, v in encoded.items() if k not in ("offset_mapping", "overflow_to_sample_mapping")}
        return {**out, "start_positions": starts, "end_positions": ends}

    features = dataset.map(prepare, batched=True, remove_columns=dataset.column_names, desc="QA train windows")
    return features.with_format("torch")


def qa_eval_features(
    dataset: datasets.Dataset,
    tokenizer: Any,
    question: str,
    context: str,
    answers: str,
    max_length: int,
    doc_stride: int,
) -> datasets.Dataset:
    """Evaluation windows keeping ``example_id`` and ``offset_mapping`` (None outside the context).

    Args are as for ``qa_train_features`` (`answers` is unused: references come from the examples).

    Returns:
        Features whose model inputs are torch-formatted, shape (L,); ``example_id`` and
        ``offset_mapping`` are read with ``features.with_format(None)`` (``postprocess_qa`` does).
    """
    del answers

    def prepare(batch: dict[str, list]) -> dict[str, Any]:
        encoded = _tokenize_windows(batch, tokenizer, question, context, max_length, doc_stride)
        example_ids, offsets = [], []
        for i, example in enumerate(encoded["overflow_to_sample_mapping"]):
            sequence_ids = encoded.sequence_ids(i)
            example_ids.append(str(batch["id"][example]))
            offsets.append(
                [o if s == 1 else None for o, s in zip(encoded["offset_mapping"][i], sequence_ids, strict=True)]
            )
        out = {k: v for k, v in encoded.items() if k not in ("offset_mapping", "overflow_to_sample_mapping")}
        return {**out, "example_id": example_ids, "offset_mapping": offsets}

    features = dataset.map(prepare, batched=True, remove_columns=dataset.column_names, desc="QA eval windows")
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in features.column_names]
    return features.with_format("torch", columns=columns)


def _as_numpy(logits: Any) -> np.ndarray:
    if isinstance(logits, torch.Tensor):
        return logits.detach().float().cpu().numpy()
    return np.asarray(logits, dtype=np.float32)


def _rows(table: Any) -> Iterable[Mapping[str, Any]]:
    """Rows of a ``datasets.Dataset`` (unformatted) or of a sequence of dicts."""
    return table.with_format(None) if isinstance(table, datasets.Dataset) else table


def _best_span(
    offsets: Offsets, start: np.ndarray, end: np.ndarray, n_best: int, max_answer_length: int
) -> tuple[float, tuple[int, int]] | None:
    """Highest start+end logit pair of one window that is a valid context span, as (score, chars)."""
    best: tuple[float, tuple[int, int]] | None = None
    for s in np.argsort(start)[::-1][:n_best].tolist():
        for e in np.argsort(end)[::-1][:n_best].tolist():
            if s >= len(offsets) or e >= len(offsets):
                continue
            first, last = offsets[s], offsets[e]
            if first is None or last is None or e < s or e - s + 1 > max_answer_length:
                continue  # outside the context (question, special, padding), reversed, or too long
            score = float(start[s] + end[e])
            if best is None or score > best[0]:
                best = (score, (int(first[0]), int(last[1])))
    return best


def postprocess_qa(
    examples: Any,
    features: Any,
    start_logits: Any,
    end_logits: Any,
    n_best: int = 20,
    max_answer_length: int = 30,
    context_key: str = "context",
) -> dict[str, str]:
    """Best answer text per example from window logits (SQuAD v1.1: an answer always exists).

    A span is a start and an end token inside the same window, both in the context, end >= start,
    at most `max_answer_length` tokens long; its score is start_logit + end_logit. Only the `n_best`
    top starts and ends of each window are paired.

    Args:
        examples: Rows with ``id`` and `context_key` (a Dataset or a sequence of dicts).
        features: Windows with ``example_id`` and ``offset_mapping`` (a Dataset from
            ``qa_eval_features`` or a sequence of dicts), in the order of the logits.
        start_logits: Shape (F, L), one row per window.
        end_logits: Shape (F, L).
        n_best: Candidates per window for start and for end.
        max_answer_length: Longest answer in tokens.
        context_key: Context column of `examples`.

    Returns:
        ``{example id: answer text}`` ("" where no window has a valid span).
    """
    starts, ends = _as_numpy(start_logits), _as_numpy(end_logits)
    windows_of: dict[str, list[int]] = defaultdict(list)
    offsets_of: list[Offsets] = []
    for index, feature in enumerate(_rows(features)):
        windows_of[str(feature["example_id"])].append(index)
        offsets_of.append(feature["offset_mapping"])
    if len(offsets_of) != len(starts) or len(starts) != len(ends):
        raise ValueError(f"{len(offsets_of)} features but {len(starts)} start and {len(ends)} end logit rows")
    predictions = {}
    for example in _rows(examples):
        example_id, text = str(example["id"]), example[context_key]
        candidates = [
            _best_span(offsets_of[f], starts[f], ends[f], n_best, max_answer_length) for f in windows_of[example_id]
        ]
        valid = [c for c in candidates if c is not None]
        predictions[example_id] = text[slice(*max(valid, key=lambda c: c[0])[1])] if valid else ""
    return predictions


def squad_references(examples: Any, answers_key: str = "answers") -> dict[str, list[str]]:
    """``{example id: gold answer texts}`` for ``compute_metric("squad", ...)``."""
    return {str(row["id"]): list(row[answers_key]["text"]) for row in _rows(examples)}
