"""SQuAD windows and span post-processing, on hand-made offsets/logits and with the real WordPiece."""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np
import pytest

from ziplm.data.qa import postprocess_qa, qa_eval_features, qa_train_features, squad_references
from ziplm.eval.metrics import compute_metric

CONTEXT = "the quick brown fox jumps over the lazy dog"
WORDS = {"the": (0, 3), "quick": (4, 9), "brown": (10, 15), "fox": (16, 19), "jumps": (20, 25)}
WORDS |= {"over": (26, 30), "the2": (31, 34), "lazy": (35, 39), "dog": (40, 43)}
# Two windows of one example: [CLS] q [SEP] <context tokens> [SEP] (padding), None outside the context.
WINDOW_A = [None, None, None, WORDS["the"], WORDS["quick"], WORDS["brown"], WORDS["fox"], None, None, None]
WINDOW_B = [None, None, None, WORDS["fox"], WORDS["jumps"], WORDS["over"], WORDS["the2"], WORDS["lazy"]]
WINDOW_B += [WORDS["dog"], None]
EXAMPLES = [{"id": "q1", "context": CONTEXT}]


def _logits(**peaks: float) -> np.ndarray:
    """Length-10 logits, 0 except at the given positions (keys p0..p9)."""
    out = np.zeros(10, dtype=np.float32)
    for key, value in peaks.items():
        out[int(key[1:])] = value
    return out


def test_span_crossing_the_window_boundary_is_rejected() -> None:
    features = [
        {"example_id": "q1", "offset_mapping": WINDOW_A},
        {"example_id": "q1", "offset_mapping": WINDOW_B},
    ]
    # Window A: start at "brown" (10), end peaks on the [SEP] after "fox" (the window's edge: the answer
    # would continue in window B), score 20 — rejected; "brown fox" scores 10 + 1.
    # Window B: "fox ... dog" scores 0.5 + 10. Pairing A's start with B's end (20) is impossible.
    starts = np.stack([_logits(p5=10.0), _logits(p3=0.5)])
    ends = np.stack([_logits(p7=10.0, p6=1.0), _logits(p8=10.0)])
    assert postprocess_qa(EXAMPLES, features, starts, ends) == {"q1": "brown fox"}


def test_max_answer_length_cuts_long_spans() -> None:
    features = [{"example_id": "q1", "offset_mapping": WINDOW_B}]
    starts = _logits(p3=5.0, p7=1.0)[None]  # fox, lazy
    ends = _logits(p8=5.0, p5=2.0)[None]  # dog, over
    assert postprocess_qa(EXAMPLES, features, starts, ends) == {"q1": "fox jumps over the lazy dog"}
    # fox..dog is 6 tokens: with at most 3, fox..over (5 + 2) beats lazy..dog (1 + 5); lazy..over is reversed.
    assert postprocess_qa(EXAMPLES, features, starts, ends, max_answer_length=3) == {"q1": "fox jumps over"}
    # With at most 2, lazy..dog (1 + 5) beats fox..jumps (5 + 0).
    assert postprocess_qa(EXAMPLES, features, starts, ends, max_answer_length=2) == {"q1": "lazy dog"}


def test_no_valid_span_gives_an_empty_answer() -> None:
    features = [{"example_id": "q1", "offset_mapping": [None] * 10}]
    assert postprocess_qa(EXAMPLES, features, _logits(p1=1.0)[None], _logits(p2=1.0)[None]) == {"q1": ""}
    with pytest.raises(ValueError, match="1 features but 2 start"):
        postprocess_qa(EXAMPLES, features, np.zeros((2, 10)), np.zeros((2, 10)))


def _squad_rows() -> datasets.Dataset:
    filler = " ".join(f"word{i}" for i in range(40))
    contexts = [f"{filler} The capital of France is Paris. {filler}", "Short context about the Eiffel Tower."]
    answers = [
        {"text": ["Paris"], "answer_start": [contexts[0].index("Paris")]},
        {"text": ["Eiffel Tower"], "answer_start": [contexts[1].index("Eiffel")]},
    ]
    return datasets.Dataset.from_dict(
        {
            "id": ["a", "b"],
            "question": ["  What is the capital of France?", "Which tower?"],
            "context": contexts,
            "answers": answers,
        }
    )


def test_train_windows_point_at_the_answer_or_cls(bert_tokenizer: Any) -> None:
    rows = _squad_rows()
    features = qa_train_features(rows, bert_tokenizer, "question", "context", "answers", 48, 16)
    assert len(features) > len(rows)  # the long context overflowed into several windows
    batch = features[:]
    assert batch["input_ids"].shape[1] == 48
    found = []
    for ids, start, end in zip(batch["input_ids"], batch["start_positions"], batch["end_positions"], strict=True):
        if start == 0:
            assert end == 0  # answer outside this window: CLS
        else:
            found.append(bert_tokenizer.decode(ids[start : end + 1]))
    assert "paris" in found and "eiffel tower" in found
    assert (batch["start_positions"] == 0).any()


def test_eval_windows_round_trip_through_postprocessing(bert_tokenizer: Any) -> None:
    rows = _squad_rows()
    features = qa_eval_features(rows, bert_tokenizer, "question", "context", "answers", 48, 16)
    raw = features.with_format(None)
    assert raw[0]["example_id"] == "a" and raw[0]["offset_mapping"][0] is None
    # Put a peak on the answer's tokens in every window that holds the whole answer.
    starts = np.zeros((len(raw), 48), dtype=np.float32)
    ends = np.zeros_like(starts)
    gold = {row["id"]: row["answers"] for row in rows}
    for f, feature in enumerate(raw):
        first = gold[feature["example_id"]]["answer_start"][0]
        last = first + len(gold[feature["example_id"]]["text"][0])
        for t, span in enumerate(feature["offset_mapping"]):
            starts[f, t] = 5.0 if span is not None and span[0] == first else 0.0
            ends[f, t] = 5.0 if span is not None and span[1] == last else 0.0
    predictions = postprocess_qa(rows, features, starts, ends)
    assert predictions == {"a": "Paris", "b": "Eiffel Tower"}
    assert compute_metric("squad", predictions, squad_references(rows)) == {"exact_match": 100.0, "f1": 100.0}
    assert set(features[:].keys()) == {"input_ids", "attention_mask", "token_type_ids"}
