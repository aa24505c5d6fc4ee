"""Sliding-window perplexity: every token is scored exactly once, and the perplexity is exact."""

from __future__ import annotations

import math
from typing import Any

import datasets
import pytest
import torch

from ziplm.data.lm import IGNORE_INDEX, lm_eval_windows, lm_token_stream, sliding_windows
from ziplm.eval.metrics import compute_metric, summed_nll


@pytest.mark.parametrize(
    ("n", "max_length", "stride"),
    [(100, 32, 16), (100, 32, 32), (96, 32, 16), (20, 32, 16), (101, 10, 3), (1, 4, 1), (33, 32, 31)],
)
def test_windows_score_every_token_exactly_once(n: int, max_length: int, stride: int) -> None:
    ids = torch.arange(n)
    windows = sliding_windows(ids, max_length, stride)
    scored = torch.zeros(n, dtype=torch.long)
    for k, (inputs, labels) in enumerate(windows):
        begin = k * stride
        assert torch.equal(inputs, ids[begin : begin + max_length])
        assert inputs.shape == labels.shape and inputs.numel() <= max_length
        real = labels != IGNORE_INDEX
        assert torch.equal(labels[real], inputs[real])
        # Context first, then the scored tokens: labels are -100 only on a prefix.
        assert bool(real[int((~real).sum()) :].all())
        scored[labels[real]] += 1
    assert scored.tolist() == [1] * n
    assert windows[-1][0][-1] == n - 1


def test_windows_after_the_first_keep_max_length_minus_stride_context() -> None:
    windows = sliding_windows(torch.arange(64), 16, 4)
    assert all(int((labels == IGNORE_INDEX).sum()) == 12 for _, labels in windows[1:])


def test_invalid_windows_fail() -> None:
    with pytest.raises(ValueError, match="stride must be in"):
        sliding_windows(torch.arange(10), 4, 5)
    with pytest.raises(ValueError, match="empty token stream"):
        sliding_windows(torch.arange(0), 4, 2)


def test_padded_eval_windows_give_the_exact_perplexity(gpt2_tokenizer: Any) -> None:
    rows = datasets.Dataset.from_dict({"text": ["The cat sat on the mat.", "A dog ran to the park and back."]})
    stream = lm_token_stream(rows, gpt2_tokenizer, "text")
    windows = lm_eval_windows(rows, gpt2_tokenizer, "text", max_length=8, stride=3)
    batch = windows[:]
    assert batch["input_ids"].shape[1] == 8
    assert bool((batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all())  # padding unscored
    # A unigram "model": the same log-probabilities at every position, so the exact perplexity is known.
    torch.manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(gpt2_tokenizer.vocab_size), dim=0)
    logits = log_probs.expand(*batch["input_ids"].shape, -1)
    nll, count = summed_nll(logits, batch["labels"])
    assert count == stream.numel() - 1  # the stream's first token has no context to be predicted from
    expected = math.exp(float(-log_probs[stream[1:]].double().mean()))
    assert compute_metric("perplexity", float(nll), count)["perplexity"] == pytest.approx(expected, rel=1e-5)
