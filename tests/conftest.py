"""Shared fixtures: tiny random models built from configs (no network, milliseconds to build), and an
offline Hugging Face cache to put Hub repos in."""

from __future__ import annotations

import json
from pathlib import Path

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


HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline, empty Hugging Face cache: the real hf_hub_download resolves Hub ids from it, without network
    (huggingface_hub reads these constants at call time, not only at import)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def cache_hub_repo(cache: Path, repo: str, files: dict[str, object], absent: tuple[str, ...] = ()) -> None:
    """Put JSON `files` of Hub `repo` in `cache` as a download leaves them (``refs/main`` -> ``snapshots/<commit>``);
    `absent`: files an online call found missing (the ``.no_exist`` markers it leaves)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(HUB_COMMIT)
    for name, content in files.items():
        path = folder / "snapshots" / HUB_COMMIT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))
    for name in absent:
        (folder / ".no_exist" / HUB_COMMIT).mkdir(parents=True, exist_ok=True)
        (folder / ".no_exist" / HUB_COMMIT / name).touch()
