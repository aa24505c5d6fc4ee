"""trim_padding: cutting all-padding columns changes nothing a masked encoder computes for real tokens."""

from __future__ import annotations

import torch
import transformers

from ziplm.core.embedding import Pooling, pool
from ziplm.core.padding import trim_padding, used_length


def test_used_length_is_one_past_the_last_real_column() -> None:
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    assert used_length(mask) == 3
    assert used_length(torch.zeros(2, 4)) == 1  # nothing real: one column stays, shapes stay valid
    assert used_length(torch.tensor([[0, 0, 1], [0, 1, 1]])) == 3  # left padding: nothing to cut


def test_trims_sequence_tensors_and_keeps_per_row_ones() -> None:
    batch = {
        "input_ids": torch.arange(12).reshape(2, 6),
        "attention_mask": torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]]),
        "labels": torch.tensor([1, 0]),  # class labels: (batch,)
        "start_positions": torch.tensor([2, 1]),
        "lm_labels": torch.full((2, 6), -100),
    }
    out = trim_padding(batch)
    assert out["input_ids"].tolist() == [[0, 1, 2], [6, 7, 8]]
    assert out["attention_mask"].shape == (2, 3) and out["lm_labels"].shape == (2, 3)
    assert torch.equal(out["labels"], batch["labels"]) and torch.equal(out["start_positions"], batch["start_positions"])
    assert trim_padding({"input_ids": batch["input_ids"]})["input_ids"].shape == (2, 6)  # no mask: unchanged


def test_left_padded_batch_is_unchanged() -> None:
    batch = {
        "input_ids": torch.ones(2, 4, dtype=torch.long),
        "attention_mask": torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]),
    }
    out = trim_padding(batch)
    assert all(torch.equal(out[k], batch[k]) for k in batch)


def test_bert_outputs_on_real_tokens_are_unchanged() -> None:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    model = transformers.BertModel(config).eval()
    ids = torch.randint(5, 50, (3, 16))
    mask = torch.zeros(3, 16, dtype=torch.long)
    for row, length in enumerate((5, 9, 7)):
        mask[row, :length] = 1
    ids = ids * mask  # pad id 0 after the real tokens
    full = model(input_ids=ids, attention_mask=mask).last_hidden_state
    short = trim_padding({"input_ids": ids, "attention_mask": mask})
    cut = model(**short).last_hidden_state
    assert cut.shape == (3, 9, 32)
    for row, length in enumerate((5, 9, 7)):
        torch.testing.assert_close(cut[row, :length], full[row, :length], atol=1e-5, rtol=1e-5)
    pooling = Pooling("mean", True)
    torch.testing.assert_close(
        pool(cut, short["attention_mask"], pooling), pool(full, mask, pooling), atol=1e-5, rtol=1e-5
    )
