"""Checks shared by the Llama-family and OPT adapter tests: masking parity, KV-cache decoding, OBS optimum."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ziplm.core.obs import group_columns, prune_groups
from ziplm.core.structure import Structure
from ziplm.models import adapter_for, build_model, get_output_weight, set_output_weight
from ziplm.models.adapter import adapter_parameter_counts
from ziplm.models.spec import ModelSpec
from ziplm.pruning.capture import capture

VOCAB = 120


def tiny_spec(family: str, **dims: Any) -> ModelSpec:
    """A 3-layer decoder with hidden 32, 4 query heads (2 KV heads for GQA families) and FFN 48."""
    base: dict[str, Any] = {"hidden_size": 32, "num_layers": 3, "num_heads": 4, "intermediate_size": 48}
    base |= {"vocab_size": VOCAB, "max_position_embeddings": 64}
    return ModelSpec(name=f"tiny-{family}", family=family, source="scratch", **(base | dims))


def tiny_model(spec: ModelSpec, **overrides: Any) -> nn.Module:
    """Causal LM in eval mode, with trained-looking norms (HF inits weights 1, biases 0) so that a norm that
    should have been dropped, or applied to the wrong heads, changes the output."""
    model = build_model(spec, "lm", **overrides).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)
    return model


def token_batch(batch: int = 3, seq: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids and a mask whose last row is left-padded (as batched generation pads)."""
    ids = torch.randint(0, VOCAB, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, :3] = 0
    return ids, mask


def logits(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits  # type: ignore[no-any-return]


def zero_removed_columns(model: nn.Module, structure: Structure) -> None:
    """Masking reference: zero the output-projection input columns of every removed head/group/neuron."""
    adapter, dims = adapter_for(model), structure.dims
    for i, layer in enumerate(structure.layers):
        w = get_output_weight(adapter, model, i, "attention")
        for h in set(range(dims.num_heads)) - set(layer.heads):
            w[:, h * dims.head_dim : (h + 1) * dims.head_dim] = 0
        set_output_weight(adapter, model, i, "attention", w)
        w = get_output_weight(adapter, model, i, "ffn")
        w[:, sorted(set(range(dims.intermediate_size)) - set(layer.neurons))] = 0
        set_output_weight(adapter, model, i, "ffn", w)


def zero_removed_sublayers(model: nn.Module, structure: Structure) -> None:
    """Removed sublayers as "output projection 0, bias 0": for a pre-norm block this is x -> x."""
    adapter = adapter_for(model)
    with torch.no_grad():
        for i, layer in enumerate(structure.layers):
            for sublayer, removed in (("attention", layer.attention_removed), ("ffn", layer.ffn_removed)):
                projection: Any = adapter.output_projection(model, i, sublayer)  # type: ignore[arg-type]
                if removed:
                    projection.weight.zero_()
                    if projection.bias is not None:
                        projection.bias.zero_()


def check_surgery_parity(model: nn.Module, structure: Structure) -> nn.Module:
    """Physical surgery gives the masked model's logits; returns the pruned model."""
    masked = copy.deepcopy(model)
    zero_removed_columns(masked, structure)
    zero_removed_sublayers(masked, structure)
    adapter_for(model).apply_structure(model, structure)
    ids, mask = token_batch()
    torch.testing.assert_close(logits(model, ids, mask), logits(masked, ids, mask), atol=1e-5, rtol=0)
    return model


def sublayer_parameters(model: nn.Module, names: dict[str, tuple[str, ...]]) -> list[dict[str, int]]:
    """Real parameters of each block's sublayers; `names` maps a sublayer to its block attributes."""
    counts = []
    for block in adapter_for(model).layers(model):
        counts.append(
            {
                sub: sum(p.numel() for attr in attrs for p in getattr(block, attr).parameters())
                for sub, attrs in names.items()
            }
        )
    return counts


def check_parameter_counts(model: nn.Module, structure: Structure, names: dict[str, tuple[str, ...]]) -> None:
    """The adapter's count equals the real sublayer parameters, dense and pruned; the total drops by it."""
    adapter = adapter_for(model)
    dense = Structure.dense(adapter.dims(model))
    total = sum(p.numel() for p in model.parameters())
    assert adapter_parameter_counts(adapter, model, dense) == sublayer_parameters(model, names)
    adapter.apply_structure(model, structure)
    assert adapter_parameter_counts(adapter, model, structure) == sublayer_parameters(model, names)

    def prunable(s: Structure) -> int:
        return sum(c["attention"] + c["ffn"] for c in adapter_parameter_counts(adapter, model, s))

    assert sum(p.numel() for p in model.parameters()) == total - prunable(dense) + prunable(structure)


def check_cached_decoding(model: nn.Module, prompt_length: int = 5, new_tokens: int = 6) -> None:
    """Decoding token by token through the KV cache equals the full forward pass (positions, masks, RoPE),
    and greedy ``generate`` gives the same tokens with and without the cache."""
    ids, _ = token_batch(batch=2, seq=prompt_length + new_tokens)
    full = logits(model, ids)
    with torch.no_grad():
        out = model(input_ids=ids[:, :prompt_length], use_cache=True)
        steps, cache = [out.logits], out.cache
        for t in range(prompt_length, ids.shape[1]):
            out = model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True)
            steps.append(out.logits)
            cache = out.cache
    assert cache.get_seq_length() == ids.shape[1]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    prompt = ids[:, :prompt_length]
    kwargs: dict[str, Any] = {"max_new_tokens": new_tokens, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        cached = model.generate(prompt, attention_mask=torch.ones_like(prompt), use_cache=True, **kwargs)  # type: ignore[operator]
        plain = model.generate(prompt, attention_mask=torch.ones_like(prompt), use_cache=False, **kwargs)  # type: ignore[operator]
    assert torch.equal(cached, plain)


def check_obs_is_least_squares(model: nn.Module, layer: int, sublayer: str, keep: list[int]) -> None:
    """OBS on a real projection's captured Hessian keeps weights equal to the damped least-squares optimum
    over the kept columns; H itself equals 2·XᵀX/n over the non-padding inputs the projection saw."""
    adapter = adapter_for(model)
    projection: Any = adapter.output_projection(model, layer, sublayer)  # type: ignore[arg-type]
    seen: list[torch.Tensor] = []
    ids, mask = token_batch(batch=4, seq=16)
    handle = projection.register_forward_pre_hook(lambda _, args: seen.append(args[0].reshape(-1, args[0].shape[-1])))
    stats = capture(model, [{"input_ids": ids, "attention_mask": mask}], [layer], show_progress=False)
    handle.remove()
    X = seen[0][mask.reshape(-1).bool()].double()
    H = stats.stats[(layer, sublayer)].hessian.hessian()  # type: ignore[index]
    torch.testing.assert_close(H, 2 * X.T @ X / X.shape[0], atol=1e-8, rtol=1e-8)
    dims = adapter.dims(model)
    width = dims.head_dim if sublayer == "attention" else 1
    W = get_output_weight(adapter, model, layer, sublayer).double()  # type: ignore[arg-type]
    result = prune_groups(W, H, width, keep)
    Hd = H.clone()
    Hd.diagonal().add_(0.01 * H.diagonal().mean())
    for level in result.levels[1:]:
        if level.keep == 0:
            continue
        K = group_columns(level.kept_groups, width)
        optimum = W @ Hd[:, K] @ torch.linalg.inv(Hd[K][:, K])
        assert ((level.weight - optimum).norm() / optimum.norm()).item() < 1e-6
