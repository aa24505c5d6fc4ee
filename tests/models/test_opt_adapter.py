"""OPT adapter (pre-LN only): head/neuron surgery, identities, KV cache, parameter counts, save/load."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import transformers

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
from ziplm.models.opt import OPTAdapter

SUBLAYERS = {"attention": ("self_attn", "self_attn_layer_norm"), "ffn": ("fc1", "fc2", "final_layer_norm")}


def _mixed(dims: object) -> Structure:
    """Layer 0: attention removed; layer 1: one head left, FFN removed; layer 2: partial both."""
    return Structure.from_kept(dims, [[], [2], [0, 3]], [[3, 7, 20], [], list(range(0, 48, 2))])  # type: ignore[arg-type]


def test_dims_and_adapter() -> None:
    model = tiny_model(tiny_spec("opt"))
    assert isinstance(adapter_for(model), OPTAdapter)
    dims = adapter_for(model).dims(model)
    assert (dims.num_heads, dims.head_dim, dims.intermediate_size) == (4, 8, 48)


def test_physical_surgery_equals_zeroed_columns() -> None:
    model = tiny_model(tiny_spec("opt"))
    dims = adapter_for(model).dims(model)
    rng = random.Random(5)
    partial = Structure.from_kept(
        dims, [rng.sample(range(4), rng.randint(1, 3)) for _ in range(3)], [rng.sample(range(48), 20) for _ in range(3)]
    )
    pruned = check_surgery_parity(model, partial)
    assert pruned.model.decoder.layers[0].self_attn.num_heads == len(partial.layers[0].heads)
    check_surgery_parity(tiny_model(tiny_spec("opt")), _mixed(dims))


def test_parameter_counts_equal_the_real_sublayers() -> None:
    model = tiny_model(tiny_spec("opt"))
    check_parameter_counts(model, _mixed(adapter_for(model).dims(model)), SUBLAYERS)
    block = adapter_for(model).layers(model)[1]
    assert not [p for attr in SUBLAYERS["ffn"] for p in getattr(block, attr).parameters()]


def test_generation_with_kv_cache_after_removing_attention() -> None:
    model = tiny_model(tiny_spec("opt"))
    check_cached_decoding(model)
    adapter_for(model).apply_structure(model, _mixed(adapter_for(model).dims(model)))
    check_cached_decoding(model)
    ids, _ = token_batch(batch=2, seq=7)
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).cache
    assert tuple(cache.layers[0].keys.shape) == (2, 1, 7, 1)  # removed: a width-1 placeholder per token
    assert tuple(cache.layers[1].keys.shape) == (2, 1, 7, 8)


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = tiny_model(tiny_spec("opt"))
    structure = _mixed(adapter_for(model).dims(model))
    adapter_for(model).apply_structure(model, structure)
    folder = save_pruned(model, structure, tmp_path / "member")
    loaded = load_pruned(folder)
    ids, mask = token_batch()
    torch.testing.assert_close(logits(loaded, ids, mask), logits(model, ids, mask), atol=0, rtol=0)
    manifest = json.loads((folder / "ziplm.json").read_text())
    layers = adapter_for(loaded).layers(loaded)
    assert manifest["family"] == "opt"
    assert manifest["prunable_parameters"] == sum(p.numel() for p in layers.parameters())


@pytest.mark.parametrize(("sublayer", "keep"), [("ffn", [48, 17, 2]), ("attention", [4, 2, 1])])
def test_obs_is_the_least_squares_optimum(sublayer: str, keep: list[int]) -> None:
    check_obs_is_least_squares(tiny_model(tiny_spec("opt")), 1, sublayer, keep)


def test_post_layer_norm_opt_is_refused() -> None:
    config = transformers.OPTConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, ffn_dim=64,
        word_embed_proj_dim=32, do_layer_norm_before=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"post-LN .*opt-350m"):
        adapter_for(transformers.OPTForCausalLM(config)).dims(transformers.OPTForCausalLM(config))
    with pytest.raises(ValueError, match="post-LN"):
        build_model(tiny_spec("opt"), "lm", do_layer_norm_before=False)


def test_prune_query_heads_is_refused_without_gqa() -> None:
    with pytest.raises(ValueError, match="no grouped-query attention"):
        build_model(tiny_spec("opt", prune_query_heads=True), "lm")
