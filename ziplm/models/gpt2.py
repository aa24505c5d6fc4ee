"""GPT-2 (GPT2Model, GPT2LMHeadModel): HF ``Conv1D`` layers store weights transposed (d_in, d_out).

Prunable per block: heads (Q/K/V slices of the fused ``attn.c_attn``, rows of ``attn.c_proj``'s
storage) and MLP neurons (``mlp.c_fc`` outputs, ``mlp.c_proj`` inputs). GPT-2 is pre-LN, so a
removed sublayer drops the residual branch, including its LayerNorm: x -> x. A removed attention still
advances the KV cache (`RemovedCachedAttention`): GPT-2 reads positions and the causal mask's size from
layer 0's cache, so cached generation would go wrong if that slot stayed empty.
"""

from __future__ import annotations

from typing import Any, cast

from torch import nn

from ziplm.core.structure import ModelDims, Structure
from ziplm.models.adapter import Sublayer, apply_per_layer
from ziplm.models.surgery import RemovedCachedAttention, ZeroBranch, slice_conv1d


class GPT2Adapter:
    """`ModelAdapter` for HF GPT-2 models."""

    family = "gpt2"

    def layers(self, model: nn.Module) -> nn.ModuleList:
        base = getattr(model, "transformer", model)
        if not hasattr(base, "h"):
            raise TypeError(f"{type(model).__name__} is not a GPT-2 model (no .h blocks)")
        return cast(nn.ModuleList, base.h)

    def dims(self, model: nn.Module) -> ModelDims:
        c: Any = model.config
        return ModelDims(
            num_layers=c.n_layer,
            num_heads=c.n_head,
            head_dim=c.n_embd // c.n_head,
            hidden_size=c.n_embd,
            intermediate_size=c.n_inner if c.n_inner is not None else 4 * c.n_embd,
        )

    def apply_structure(self, model: nn.Module, structure: Structure) -> None:
        head_dim = self.dims(model).head_dim
        apply_per_layer(
            self,
            model,
            structure,
            lambda block, index, heads: self._prune_attention(block, index, heads, head_dim),
            self._prune_mlp,
        )

    @staticmethod
    def _prune_attention(block: Any, index: int, head_positions: list[int], head_dim: int) -> None:
        if not head_positions:
            block.ln_1 = nn.Identity()
            block.attn = RemovedCachedAttention(index)
            return
        attn = block.attn
        width = attn.split_size  # current q/k/v width inside the fused c_attn
        cols = [p * head_dim + j for p in head_positions for j in range(head_dim)]
        fused = [part * width + c for part in range(3) for c in cols]
        attn.c_attn = slice_conv1d(attn.c_attn, fused, dim=0)
        attn.c_proj = slice_conv1d(attn.c_proj, cols, dim=1)
        # The forward pass splits the fused projection at split_size and reshapes by head_dim.
        attn.split_size = len(cols)
        attn.num_heads = len(head_positions)

    @staticmethod
    def _prune_mlp(block: Any, neuron_positions: list[int]) -> None:
        if not neuron_positions:
            block.ln_2 = nn.Identity()
            block.mlp = ZeroBranch(as_tuple=False)
            return
        block.mlp.c_fc = slice_conv1d(block.mlp.c_fc, neuron_positions, dim=0)
        block.mlp.c_proj = slice_conv1d(block.mlp.c_proj, neuron_positions, dim=1)

    def output_projection(self, model: nn.Module, layer: int, sublayer: Sublayer) -> nn.Module | None:
        block: Any = self.layers(model)[layer]
        branch = block.attn if sublayer == "attention" else block.mlp
        removed = isinstance(branch, (RemovedCachedAttention, ZeroBranch))
        return None if removed else cast(nn.Module, branch.c_proj)
