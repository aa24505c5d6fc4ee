"""OPT decoders (OPTForCausalLM, OPTModel): learned positions, LayerNorm, ReLU FFN, biases everywhere.

Prunable per block: heads (rows of ``q/k/v_proj`` with their biases, columns of ``out_proj``) and FFN
neurons (rows of ``fc1``, columns of ``fc2``). Only pre-LN OPT (``do_layer_norm_before=True``: 125m,
1.3b and up) is supported: post-LN OPT-350m would need BERT-style skip modules in a decoder, and it also
projects 1024 -> 512 embeddings, so it is refused. A removed sublayer is x -> x (its LayerNorm dropped too);
a removed attention still advances the KV cache (`RemovedCachedAttention`).
"""

from __future__ import annotations

from typing import Any, cast

from torch import nn

from ziplm.core.structure import ModelDims, Structure
from ziplm.models.adapter import Sublayer, apply_per_layer
from ziplm.models.surgery import RemovedCachedAttention, ZeroBranch, slice_linear


def check_pre_layer_norm(config: Any) -> None:
    """Refuse post-LN OPT (``do_layer_norm_before=False``, e.g. facebook/opt-350m) with a clear message."""
    if not getattr(config, "do_layer_norm_before", True):
        raise ValueError(
            "this OPT model is post-LN (do_layer_norm_before=False, like facebook/opt-350m); ziplm prunes only "
            "pre-LN OPT models (do_layer_norm_before=True: opt-125m, opt-1.3b and larger)"
        )


class OPTAdapter:
    """`ModelAdapter` for HF OPT models (pre-LN only)."""

    family = "opt"

    def layers(self, model: nn.Module) -> nn.ModuleList:
        check_pre_layer_norm(model.config)
        base = getattr(model, "model", model)
        base = getattr(base, "decoder", base)
        if not isinstance(getattr(base, "layers", None), nn.ModuleList):
            raise TypeError(f"{type(model).__name__} is not an OPT model (no decoder.layers blocks)")
        return cast(nn.ModuleList, base.layers)

    def dims(self, model: nn.Module) -> ModelDims:
        c: Any = model.config
        check_pre_layer_norm(c)
        return ModelDims(
            num_layers=c.num_hidden_layers,
            num_heads=c.num_attention_heads,
            head_dim=c.hidden_size // c.num_attention_heads,
            hidden_size=c.hidden_size,
            intermediate_size=c.ffn_dim,
        )

    def apply_structure(self, model: nn.Module, structure: Structure) -> None:
        head_dim = self.dims(model).head_dim
        apply_per_layer(
            self,
            model,
            structure,
            lambda block, index, heads: self._prune_attention(block, index, heads, head_dim),
            self._prune_ffn,
        )

    @staticmethod
    def _prune_attention(block: Any, index: int, heads: list[int], head_dim: int) -> None:
        if not heads:
            block.self_attn_layer_norm = nn.Identity()
            block.self_attn = RemovedCachedAttention(index)
            return
        attn = block.self_attn
        rows = [p * head_dim + j for p in heads for j in range(head_dim)]
        attn.q_proj = slice_linear(attn.q_proj, rows, dim=0)
        attn.k_proj = slice_linear(attn.k_proj, rows, dim=0)
        attn.v_proj = slice_linear(attn.v_proj, rows, dim=0)
        attn.out_proj = slice_linear(attn.out_proj, rows, dim=1)
        attn.num_heads = len(heads)  # the forward reshapes q/k/v with (num_heads, head_dim)

    @staticmethod
    def _prune_ffn(block: Any, neurons: list[int]) -> None:
        if not neurons:
            # The FFN lives in the block itself: x + fc2(act(fc1(LN(x)))) with fc1/fc2 giving a 0-dim zero is x.
            block.final_layer_norm = nn.Identity()
            block.fc1 = ZeroBranch(as_tuple=False)
            block.fc2 = ZeroBranch(as_tuple=False)
            return
        block.fc1 = slice_linear(block.fc1, neurons, dim=0)
        block.fc2 = slice_linear(block.fc2, neurons, dim=1)

    def output_projection(self, model: nn.Module, layer: int, sublayer: Sublayer) -> nn.Module | None:
        block: Any = self.layers(model)[layer]
        if sublayer == "attention":
            attn = block.self_attn
            return None if isinstance(attn, RemovedCachedAttention) else cast(nn.Module, attn.out_proj)
        return None if isinstance(block.fc2, ZeroBranch) else cast(nn.Module, block.fc2)

    def sublayer_parameter_counts(self, model: nn.Module, structure: Structure) -> list[dict[str, int]]:
        """Per-layer parameters implied by `structure`: OPT's biases follow ``enable_bias``, its LayerNorms
        ``layer_norm_elementwise_affine`` (weight + bias)."""
        c: Any = model.config
        h, head_dim = c.hidden_size, c.hidden_size // c.num_attention_heads
        bias = bool(getattr(c, "enable_bias", True))
        norm = 2 * h if getattr(c, "layer_norm_elementwise_affine", True) else 0
        counts = []
        for layer in structure.layers:
            w, m = len(layer.heads) * head_dim, len(layer.neurons)
            attention = 4 * h * w + (3 * w + h) * bias + norm if w else 0
            ffn = 2 * h * m + (m + h) * bias + norm if m else 0
            counts.append({"attention": attention, "ffn": ffn})
        return counts
