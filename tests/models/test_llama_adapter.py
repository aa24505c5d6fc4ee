"""Llama-family adapter (Llama, Mistral, Qwen2, Qwen3): KV-group surgery, identities, KV cache, counts, io."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from tests.models.decoder_checks import (
    check_cached_decoding,
    check_obs_is_least_squares,
    check_parameter_counts,
    check_surgery_parity,
    logits,
    tiny_model,
    tiny_spec,
    token_batch,
)
from ziplm.core.structure import Structure
from ziplm.models import adapter_for, build_model, load_pruned, save_pruned
from ziplm.models.llama import LlamaAdapter
from ziplm.models.registry import ADAPTERS
from ziplm.models.spec import ModelSpec

FAMILIES = ["llama", "mistral", "qwen2", "qwen3"]
SUBLAYERS = {"attention": ("self_attn", "input_layernorm"), "ffn": ("mlp", "post_attention_layernorm")}


def _spec(family: str, **dims: object) -> ModelSpec:
    extra = {"head_dim": 12} if family == "qwen3" else {}  # Qwen3's head_dim need not be hidden / heads
    return tiny_spec(family, num_key_value_heads=2, **(extra | dims))  # type: ignore[arg-type]


def _mixed(dims: object) -> Structure:
    """Layer 0: attention removed; layer 1: one KV group left, FFN removed; layer 2: partial FFN only."""
    return Structure.from_kept(dims, [[], [1], [0, 1]], [[3, 7, 20], [], list(range(0, 48, 2))])  # type: ignore[arg-type]


@pytest.mark.parametrize("family", FAMILIES)
def test_dims_count_kv_groups_of_contiguous_query_heads(family: str) -> None:
    model = tiny_model(_spec(family))
    dims = adapter_for(model).dims(model)
    head_dim = 12 if family == "qwen3" else 8
    assert (dims.num_heads, dims.head_dim) == (2, 2 * head_dim)  # 2 groups of 2 query heads
    assert isinstance(adapter_for(model), LlamaAdapter) and adapter_for(model).family == family


@pytest.mark.parametrize("family", FAMILIES)
def test_physical_surgery_equals_zeroed_columns(family: str) -> None:
    model = tiny_model(_spec(family))
    dims = adapter_for(model).dims(model)
    rng = random.Random(3)
    partial = Structure.from_kept(
        dims, [[rng.randrange(2)] for _ in range(3)], [rng.sample(range(48), rng.randint(1, 47)) for _ in range(3)]
    )
    check_surgery_parity(model, partial)
    check_surgery_parity(tiny_model(_spec(family)), _mixed(dims))


def test_biased_llama_surgery_and_counts() -> None:
    """Llama with attention_bias and mlp_bias: biases are sliced with their rows and counted."""
    spec = _spec("llama")
    model = tiny_model(spec, attention_bias=True, mlp_bias=True)
    check_surgery_parity(model, _mixed(adapter_for(model).dims(model)))
    model = tiny_model(spec, attention_bias=True, mlp_bias=True)
    check_parameter_counts(model, _mixed(adapter_for(model).dims(model)), SUBLAYERS)


@pytest.mark.parametrize("family", FAMILIES)
def test_parameter_counts_equal_the_real_sublayers(family: str) -> None:
    model = tiny_model(_spec(family))
    check_parameter_counts(model, _mixed(adapter_for(model).dims(model)), SUBLAYERS)
    blocks = adapter_for(model).layers(model)
    assert not list(blocks[0].self_attn.parameters()) and not list(blocks[0].input_layernorm.parameters())
    assert not list(blocks[1].mlp.parameters()) and not list(blocks[1].post_attention_layernorm.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_rope_and_gqa_shapes_after_removing_groups(family: str) -> None:
    model = tiny_model(_spec(family))
    head_dim = 12 if family == "qwen3" else 8
    adapter_for(model).apply_structure(model, _mixed(adapter_for(model).dims(model)))
    attn = adapter_for(model).layers(model)[1].self_attn  # one KV group: 2 query heads, 1 KV head
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features) == (
        2 * head_dim,
        head_dim,
        head_dim,
    )
    assert attn.o_proj.in_features == 2 * head_dim and attn.num_key_value_groups == 2
    if family == "qwen3":
        assert attn.q_norm.weight.shape == attn.k_norm.weight.shape == (head_dim,)
    ids, _ = token_batch(batch=2, seq=7)
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).cache
    # Removed attention (layer 0) keeps a width-1 placeholder of the right length; kept ones their real heads.
    assert tuple(cache.layers[0].keys.shape) == (2, 1, 7, 1)
    assert tuple(cache.layers[1].keys.shape) == (2, 1, 7, head_dim)
    assert tuple(cache.layers[2].keys.shape) == (2, 2, 7, head_dim)


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_with_kv_cache_after_removing_attention(family: str) -> None:
    """Layer 0's attention removed (HF reads the cache length from layer 0), one with a single group left."""
    model = tiny_model(_spec(family))
    check_cached_decoding(model)
    adapter_for(model).apply_structure(model, _mixed(adapter_for(model).dims(model)))
    check_cached_decoding(model)
    all_gone = Structure.from_kept(adapter_for(model).dims(model), [[], [], []], [[3], [], []])
    adapter_for(model).apply_structure(model, all_gone)
    check_cached_decoding(model)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_save_load_round_trip(tmp_path: Path, family: str) -> None:
    model = tiny_model(_spec(family))
    structure = _mixed(adapter_for(model).dims(model))
    adapter_for(model).apply_structure(model, structure)
    folder = save_pruned(model, structure, tmp_path / "member")
    loaded = load_pruned(folder)
    ids, mask = token_batch()
    torch.testing.assert_close(logits(loaded, ids, mask), logits(model, ids, mask), atol=0, rtol=0)
    manifest = json.loads((folder / "ziplm.json").read_text())
    layers = adapter_for(loaded).layers(loaded)
    assert manifest["family"] == family
    assert manifest["prunable_parameters"] == sum(p.numel() for p in layers.parameters())
    table = (folder / "structure.md").read_text()  # a group is one KV head with its query heads, not a "head"
    dims = adapter_for(model).dims(model)
    assert "| layer | KV groups kept | KV groups ids |" in table
    assert f"{dims.num_heads} KV groups x {dims.head_dim} columns" in table
    check_cached_decoding(loaded)


@pytest.mark.parametrize(
    ("family", "sublayer", "keep"), [("llama", "ffn", [48, 30, 9, 1]), ("qwen2", "attention", [2, 1])]
)
def test_obs_is_the_least_squares_optimum(family: str, sublayer: str, keep: list[int]) -> None:
    check_obs_is_least_squares(tiny_model(_spec(family)), 1, sublayer, keep)


def test_unsupported_architecture_lists_the_supported_ones() -> None:
    import transformers

    config = transformers.GPTNeoXConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
    )
    with pytest.raises(ValueError, match="unsupported model family 'gpt_neox'") as err:
        adapter_for(transformers.GPTNeoXForCausalLM(config))
    assert all(family in str(err.value) for family in ADAPTERS)


@pytest.mark.parametrize(
    ("kv_heads", "message"),
    [(2, "not supported yet: ziplm prunes whole KV groups"), (4, "no grouped-query attention .* nothing to prune")],
)
def test_prune_query_heads_is_refused(kv_heads: int, message: str) -> None:
    spec = tiny_spec("llama", num_key_value_heads=kv_heads, prune_query_heads=True)
    with pytest.raises(ValueError, match=message):
        build_model(spec, "lm")
