"""Shared fixtures: tiny random models built from configs (no network, milliseconds to build)."""

from __future__ import annotations

import pytest
import torch
from transformers.utils import logging as hf_logging

from ziplm.models import ModelSpec

hf_logging.set_verbosity_error()

TINY_BERT = ModelSpec(
    name="tiny-bert",
    family="bert",
    source="scratch",
    hidden_size=32,
    num_layers=3,
    num_heads=4,
    intermediate_size=64,
    vocab_size=120,
    max_position_embeddings=64,
)
TINY_GPT2 = ModelSpec(
    name="tiny-gpt2",
    family="gpt2",
    source="scratch",
    hidden_size=32,
    num_layers=3,
    num_heads=4,
    intermediate_size=64,
    vocab_size=120,
    max_position_embeddings=64,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def token_batch(vocab: int = 120, batch: int = 3, seq: int = 12, pad_from: int | None = 8):
    """Random ids and an attention mask whose last row is padded from `pad_from` on."""
    ids = torch.randint(0, vocab, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    if pad_from is not None:
        mask[-1, pad_from:] = 0
    return ids, mask
