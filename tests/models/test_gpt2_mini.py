"""The offline GPT-2 miniature: ``model=gpt2-mini`` and ``experiment=gpt2-mini-wiki`` compose and build."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from ziplm.config.paths import compose
from ziplm.models import adapter_for, build_model, build_tokenizer
from ziplm.models.bpe import parse_bpe_spec
from ziplm.pipelines.common import model_spec


@cache
def _cfg(override: str) -> DictConfig:
    return compose([override])


def test_gpt2_mini_composes_with_a_matching_bpe() -> None:
    cfg = _cfg("model=gpt2-mini")
    model = cfg.model
    assert (model.family, model.source) == ("gpt2", "scratch")
    bpe = parse_bpe_spec(str(model.tokenizer))
    assert bpe.corpus == "wiki-excerpt"
    # train_bpe returns exactly the spec's vocab size or raises, so this is the tokenizer's size.
    assert bpe.vocab_size == model.vocab_size
    assert model.hidden_size % model.num_heads == 0


def test_gpt2_mini_builds_at_full_size() -> None:
    spec = model_spec(_cfg("model=gpt2-mini"))
    model = build_model(spec, "lm")
    dims = adapter_for(model).dims(model)
    assert (dims.num_layers, dims.num_heads, dims.intermediate_size) == (6, 8, 1024)
    assert 5e6 < sum(p.numel() for p in model.parameters()) < 7e6
    ids = torch.randint(0, 4096, (2, 128))
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (2, 128, 4096)
    assert abs(float(out.loss) - torch.log(torch.tensor(4096.0)).item()) < 1.0, "random init: ~uniform guesses"


def test_experiment_composes_offline_on_cpu() -> None:
    cfg = _cfg("experiment=gpt2-mini-wiki")
    assert (cfg.name, cfg.model.name, cfg.task.name) == ("gpt2-mini-wiki", "gpt2-mini", "wiki-excerpt")
    assert cfg.task.dataset is None, "the builtin offline excerpt, not a Hub dataset"
    assert (cfg.hardware.device, cfg.trainer.accelerator, cfg.schedule.name) == ("cpu", "cpu", "gradual")
    assert cfg.task.max_seq_length <= cfg.model.max_position_embeddings
    assert cfg.hardware.seq_length <= cfg.model.max_position_embeddings
    assert cfg.teacher.epochs > 0, "a scratch model's teacher must be trained"
    assert list(cfg.search.targets) == sorted(cfg.search.targets)


@pytest.mark.slow  # parses the Wikipedia dump and trains the 4096-token BPE (~10 s idle, minutes when busy)
def test_the_real_bpe_matches_the_model(tmp_path: Path) -> None:
    cfg = _cfg("model=gpt2-mini")
    from ziplm.data.builtin import train_texts, wiki_excerpt

    tok = build_tokenizer(model_spec(cfg), cache_dir=tmp_path, corpus=train_texts)
    assert len(tok) == cfg.model.vocab_size

    text = wiki_excerpt()["validation"]["text"][0]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and max(ids) < cfg.model.vocab_size
    assert len(ids) < 0.45 * len(text.encode("utf-8")), "the BPE compresses held-out English"
    model = build_model(model_spec(cfg), "lm")
    with torch.no_grad():
        assert model(input_ids=torch.tensor([ids[:128]])).logits.shape == (1, min(128, len(ids)), 4096)
