"""Cached generation of pruned GPT-2 members: a removed attention must still advance its KV-cache slot.

GPT-2 takes its position ids and causal-mask size from ``cache.get_seq_length()``, which reads layer 0, so a
member whose layer-0 attention was removed decoded at the wrong positions with the cache on, and ``generate``
continuing from a prefilled cache re-fed tokens it had already cached. (A fresh ``generate`` passes its own
position ids, so it happened to give the right tokens even before the fix; it is checked all the same.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.models.decoder_checks import check_cached_decoding, logits, tiny_spec, token_batch
from ziplm.core.structure import Structure
from ziplm.models import adapter_for, build_model, load_pruned, save_pruned
from ziplm.models.surgery import RemovedCachedAttention, ZeroBranch

KEEP_FFN = [list(range(0, 48, 2))] * 3  # 3 layers of 4 heads and 48 neurons

# name -> kept heads per layer (3 layers of 4 heads); FFNs keep every other neuron unless said otherwise.
STRUCTURES: dict[str, list[list[int]]] = {
    "layer0-attention-removed": [[], [0, 1, 2, 3], [1, 3]],
    "all-attention-removed": [[], [], []],
    "middle-attention-removed": [[0, 2], [], [0, 1, 2, 3]],
    "some-heads-pruned": [[1], [0, 3], [2, 3]],
}


def _model() -> nn.Module:
    """Tiny GPT-2 LM with trained-looking LayerNorms, strong position embeddings and non-degenerate weights,
    so that a wrong position or a duplicated cache entry changes the logits and the greedy tokens."""
    model = build_model(tiny_spec("gpt2"), "lm").eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".ln_" in name:
                param.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)
            elif name.endswith("wpe.weight"):
                param.normal_(0.0, 0.5)
            elif name.endswith("wte.weight"):
                param.normal_(0.0, 0.1)
            elif name.endswith("weight"):
                param.normal_(0.0, 0.3)
    return model


def check_continued_generation(model: nn.Module) -> None:
    """``generate`` continuing from a prefilled cache skips the ``get_seq_length()`` tokens already cached, so
    a cache whose layer 0 lags re-feeds the prompt; it must give the tokens of generating without a cache."""
    ids, _ = token_batch(batch=2, seq=8)
    kwargs: dict[str, Any] = {"attention_mask": torch.ones_like(ids), "max_new_tokens": 6, "do_sample": False}
    with torch.no_grad():
        cache = model(input_ids=ids[:, :5], use_cache=True).cache
        continued = model.generate(ids, cache=cache, use_cache=True, pad_token_id=0, **kwargs)  # type: ignore[operator]
        plain = model.generate(ids, use_cache=False, pad_token_id=0, **kwargs)  # type: ignore[operator]
    assert torch.equal(continued, plain)


def _structure(model: nn.Module, heads: list[list[int]], neurons: list[list[int]] | None = None) -> Structure:
    return Structure.from_kept(adapter_for(model).dims(model), heads, neurons or KEEP_FFN)


def _pruned(name: str) -> tuple[nn.Module, Structure]:
    model = _model()
    structure = _structure(model, STRUCTURES[name])
    adapter_for(model).apply_structure(model, structure)
    return model, structure


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_cached_decoding_equals_the_full_forward(name: str) -> None:
    model, structure = _pruned(name)
    adapter = adapter_for(model)
    for index, (block, layer) in enumerate(zip(adapter.layers(model), structure.layers, strict=True)):
        assert isinstance(block.attn, RemovedCachedAttention) == layer.attention_removed
        assert (adapter.output_projection(model, index, "attention") is None) == layer.attention_removed
    check_cached_decoding(model)
    check_continued_generation(model)


def test_removed_attention_keeps_a_one_float_cache_slot() -> None:
    model, _ = _pruned("layer0-attention-removed")
    ids, _ = token_batch(batch=2, seq=7)
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).cache
    assert tuple(cache.layers[0].keys.shape) == (2, 1, 7, 1)
    assert tuple(cache.layers[2].keys.shape) == (2, 2, 7, 8)
    assert cache.get_seq_length() == 7


def test_removed_ffn_too_and_dense_still_decode() -> None:
    check_cached_decoding(_model())
    model = _model()
    structure = _structure(model, [[], [2], []], [[], [5, 9], []])
    adapter_for(model).apply_structure(model, structure)
    check_cached_decoding(model)


@pytest.mark.parametrize("name", ["layer0-attention-removed", "all-attention-removed", "some-heads-pruned"])
def test_save_load_round_trip_decodes_with_the_cache(tmp_path: Path, name: str) -> None:
    model, structure = _pruned(name)
    loaded = load_pruned(save_pruned(model, structure, tmp_path / "member"))
    ids, mask = token_batch()
    torch.testing.assert_close(logits(loaded, ids, mask), logits(model, ids, mask), atol=0, rtol=0)
    check_cached_decoding(loaded)
    check_continued_generation(loaded)


def test_member_saved_before_the_fix_loads_and_decodes(tmp_path: Path) -> None:
    """A folder written when a removed GPT-2 attention was a plain ``ZeroBranch``: no module names are saved
    (weights plus the structure record), so loading re-applies the structure and gets the cache-aware module."""
    model, structure = _pruned("layer0-attention-removed")
    old = adapter_for(model).layers(model)[0]
    old.attn = ZeroBranch(as_tuple=True)  # the pre-fix surgery: holds no parameters, like the new module
    folder = save_pruned(model, structure, tmp_path / "old-member")
    loaded = load_pruned(folder)
    assert isinstance(adapter_for(loaded).layers(loaded)[0].attn, RemovedCachedAttention)
    ids, mask = token_batch()
    torch.testing.assert_close(logits(loaded, ids, mask), logits(model, ids, mask), atol=0, rtol=0)
    check_cached_decoding(loaded)


def test_cross_attention_model_updates_the_self_attention_cache() -> None:
    """With ``add_cross_attention`` GPT-2 wraps its cache in an ``EncoderDecoderCache``: the removed attention
    writes to the self-attention half, and step-by-step decoding still equals the full forward."""
    model = build_model(tiny_spec("gpt2"), "lm", add_cross_attention=True).eval()
    adapter_for(model).apply_structure(model, _structure(model, STRUCTURES["layer0-attention-removed"]))
    ids, _ = token_batch(batch=2, seq=9)
    encoder = torch.randn(2, 4, 32)
    with torch.no_grad():
        full = model(input_ids=ids, encoder_hidden_states=encoder).logits
        out = model(input_ids=ids[:, :5], encoder_hidden_states=encoder, use_cache=True)
        steps, cache = [out.logits], out.cache
        for t in range(5, ids.shape[1]):
            out = model(input_ids=ids[:, t : t + 1], encoder_hidden_states=encoder, cache=cache, use_cache=True)
            steps.append(out.logits)
            cache = out.cache
    assert tuple(cache.self_attention_cache.layers[0].keys.shape) == (2, 1, 9, 1)
    assert cache.get_seq_length() == ids.shape[1]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
