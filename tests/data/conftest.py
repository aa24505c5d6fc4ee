"""Offline tokenizers for the data tests (MiniLM's BERT WordPiece, GPT-2's BPE)."""

from __future__ import annotations

from typing import Any

import pytest

from ziplm.models.build import ModelSpec, build_tokenizer


@pytest.fixture(scope="session")
def bert_tokenizer() -> Any:
    try:
        return build_tokenizer(ModelSpec(name="minilm", family="bert", source="packaged:minilm"))
    except ImportError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def gpt2_tokenizer() -> Any:
    try:
        return build_tokenizer(ModelSpec(name="tiny-gpt2", family="gpt2", source="scratch", tokenizer="packaged:gpt2"))
    except ImportError as err:
        pytest.skip(str(err))
