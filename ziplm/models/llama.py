"""Llama-family decoders (Llama, Mistral, Qwen2, Qwen3): pre-RMSNorm blocks, RoPE, grouped-query attention.

Prunable per block: attention *KV groups* (one KV head with the ``n_rep`` query heads that share it) and
SwiGLU neurons (rows of ``gate_proj``/``up_proj``, columns of ``down_proj``). HF's ``repeat_kv`` gives
query heads ``g*n_rep .. (g+1)*n_rep-1`` to KV head ``g``, so a group is one contiguous block of
``n_rep*head_dim`` columns of ``o_proj``: `ModelDims` calls that block a head (``num_heads`` = KV heads).

Family details: Qwen2 has q/k/v biases (o_proj none); Qwen3 has per-head ``q_norm``/``k_norm`` (width
head_dim, untouched by removing whole heads); Llama may set ``attention_bias``/``mlp_bias``. The attention
forward reshapes with ``-1`` heads and keeps ``num_key_value_groups`` (= n_rep, unchanged by removing whole
groups), so slicing the projections is all it needs. A removed sublayer is x -> x (its norm dropped too);
a removed attention still advances the KV cache (`RemovedCachedAttention`).
"""

from __future__ import annotations

from typing import Any, cast

from torch import nn

from ziplm.core.structure import ModelDims, Structure
from ziplm.models.adapter import Sublayer, apply_per_layer
from ziplm.models.spec import GQA_FAMILIES
from ziplm.models.surgery import RemovedCachedAttention, ZeroBranch, slice_linear

LLAMA_FAMILIES = GQA_FAMILIES  # model_types sharing this block layout


def attention_shape(config: Any) -> tuple[int, int, int]:
    """(query heads, KV heads, per-head width) of a Llama-family config."""
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    if heads % kv_heads:
        raise ValueError(f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
    return heads, kv_heads, head_dim


class LlamaAdapter:
    """`ModelAdapter` for HF Llama, Mistral, Qwen2 and Qwen3 (``family`` = the config's ``model_type``)."""

    # What the structure's "heads" are here: one KV head with the query heads sharing it (structure.md says so).
    attention_unit = "KV groups"

    def __init__(self, family: str = "llama") -> None:
        if family not in LLAMA_FAMILIES:
            raise ValueError(f"LlamaAdapter serves {LLAMA_FAMILIES}, not {family!r}")
        self.family = family

    def layers(self, model: nn.Module) -> nn.ModuleList:
        base = getattr(model, "model", model)
        if not isinstance(getattr(base, "layers", None), nn.ModuleList):
            raise TypeError(f"{type(model).__name__} is not a {self.family} model (no .layers blocks)")
        return cast(nn.ModuleList, base.layers)

    def dims(self, model: nn.Module) -> ModelDims:
        c: Any = model.config
        heads, kv_heads, head_dim = attention_shape(c)
        return ModelDims(
            num_layers=c.num_hidden_layers,
            num_heads=kv_heads,
            head_dim=(heads // kv_heads) * head_dim,
            hidden_size=c.hidden_size,
            intermediate_size=c.intermediate_size,
        )

    def apply_structure(self, model: nn.Module, structure: Structure) -> None:
        group_width = self.dims(model).head_dim
        _, _, head_dim = attention_shape(model.config)
        apply_per_layer(
            self,
            model,
            structure,
            lambda block, index, groups: self._prune_attention(block, index, groups, group_width, head_dim),
            self._prune_mlp,
        )

    @staticmethod
    def _prune_attention(block: Any, index: int, groups: list[int], group_width: int, head_dim: int) -> None:
        if not groups:
            block.input_layernorm = nn.Identity()
            block.self_attn = RemovedCachedAttention(index)
            return
        attn = block.self_attn
        q_rows = [g * group_width + j for g in groups for j in range(group_width)]
        kv_rows = [g * head_dim + j for g in groups for j in range(head_dim)]
        attn.q_proj = slice_linear(attn.q_proj, q_rows, dim=0)
        attn.k_proj = slice_linear(attn.k_proj, kv_rows, dim=0)
        attn.v_proj = slice_linear(attn.v_proj, kv_rows, dim=0)
        attn.o_proj = slice_linear(attn.o_proj, q_rows, dim=1)

    @staticmethod
    def _prune_mlp(block: Any, neurons: list[int]) -> None:
        if not neurons:
            block.post_attention_layernorm = nn.Identity()
            block.mlp = ZeroBranch(as_tuple=False)
            return
        mlp = block.mlp
        mlp.gate_proj = slice_linear(mlp.gate_proj, neurons, dim=0)
        mlp.up_proj = slice_linear(mlp.up_proj, neurons, dim=0)
        mlp.down_proj = slice_linear(mlp.down_proj, neurons, dim=1)

    def output_projection(self, model: nn.Module, layer: int, sublayer: Sublayer) -> nn.Module | None:
        block: Any = self.layers(model)[layer]
        if sublayer == "attention":
            attn = block.self_attn
            return None if isinstance(attn, RemovedCachedAttention) else cast(nn.Module, attn.o_proj)
        return None if isinstance(block.mlp, ZeroBranch) else cast(nn.Module, block.mlp.down_proj)

    def sublayer_parameter_counts(self, model: nn.Module, structure: Structure) -> list[dict[str, int]]:
        """Per-layer parameters implied by `structure`: GQA (q is n_rep x k/v), SwiGLU (3 matrices), RMSNorm.

        Biases per family: Qwen2 has q/k/v biases only; Llama/Qwen3 follow ``attention_bias`` (q/k/v/o)
        and ``mlp_bias``; Qwen3 adds its two per-head RMSNorms (head_dim each).
        """
        c: Any = model.config
        heads, kv_heads, head_dim = attention_shape(c)
        h, n_rep = c.hidden_size, heads // kv_heads
        qwen2 = self.family == "qwen2"
        qkv_bias = qwen2 or bool(getattr(c, "attention_bias", False))
        o_bias = not qwen2 and bool(getattr(c, "attention_bias", False))
        mlp_bias = bool(getattr(c, "mlp_bias", False))
        qk_norms = 2 * head_dim if self.family == "qwen3" else 0
        counts = []
        for layer in structure.layers:
            q, kv = len(layer.heads) * n_rep * head_dim, len(layer.heads) * head_dim
            attention = 0
            if layer.heads:
                attention = h * q + 2 * h * kv + q * h + h + qk_norms  # weights + input RMSNorm
                attention += (q + 2 * kv) * qkv_bias + h * o_bias
            m = len(layer.neurons)
            ffn = 3 * h * m + h + (2 * m + h) * mlp_bias if m else 0
            counts.append({"attention": attention, "ffn": ffn})
        return counts
