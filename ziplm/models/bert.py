"""BERT-like encoders (BertModel, BertForQuestionAnswering, BertForSequenceClassification, MiniLM).

Prunable per layer: attention heads (rows of Q/K/V, columns of ``attention.output.dense``) and FFN
neurons (rows of ``intermediate.dense``, columns of ``output.dense``). BERT is post-LN, so a removed
sublayer is skipped *including* its residual-add + LayerNorm.
"""

from __future__ import annotations

from typing import Any, cast

from torch import nn

from ziplm.core.structure import ModelDims, Structure
from ziplm.models.adapter import Sublayer, apply_per_layer
from ziplm.models.surgery import SkippedAttention, SkippedIntermediate, SkippedOutput, slice_linear


class BertAdapter:
    """`ModelAdapter` for HF BERT-architecture models."""

    family = "bert"

    def _encoder(self, model: nn.Module) -> nn.Module:
        base = getattr(model, "bert", model)
        if not hasattr(base, "encoder"):
            raise TypeError(f"{type(model).__name__} is not a BERT-architecture model (no .encoder)")
        return cast(nn.Module, base.encoder)

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return cast(nn.ModuleList, self._encoder(model).layer)

    def dims(self, model: nn.Module) -> ModelDims:
        c: Any = model.config
        return ModelDims(
            num_layers=c.num_hidden_layers,
            num_heads=c.num_attention_heads,
            head_dim=c.hidden_size // c.num_attention_heads,
            hidden_size=c.hidden_size,
            intermediate_size=c.intermediate_size,
        )

    def apply_structure(self, model: nn.Module, structure: Structure) -> None:
        head_dim = self.dims(model).head_dim
        apply_per_layer(
            self,
            model,
            structure,
            lambda block, _, heads: self._prune_attention(block, heads, head_dim),
            self._prune_ffn,
        )

    @staticmethod
    def _prune_attention(layer: Any, head_positions: list[int], head_dim: int) -> None:
        if not head_positions:
            layer.attention = SkippedAttention()
            return
        attn = layer.attention.self
        cols = [p * head_dim + j for p in head_positions for j in range(head_dim)]
        for name in ("query", "key", "value"):
            setattr(attn, name, slice_linear(getattr(attn, name), cols, dim=0))
        layer.attention.output.dense = slice_linear(layer.attention.output.dense, cols, dim=1)
        # The forward pass reshapes with -1 heads, but keep the bookkeeping attributes truthful.
        attn.num_attention_heads = len(head_positions)
        attn.all_head_size = len(cols)

    @staticmethod
    def _prune_ffn(layer: Any, neuron_positions: list[int]) -> None:
        if not neuron_positions:
            layer.intermediate = SkippedIntermediate()
            layer.output = SkippedOutput()
            return
        layer.intermediate.dense = slice_linear(layer.intermediate.dense, neuron_positions, dim=0)
        layer.output.dense = slice_linear(layer.output.dense, neuron_positions, dim=1)

    def output_projection(self, model: nn.Module, layer: int, sublayer: Sublayer) -> nn.Module | None:
        block: Any = self.layers(model)[layer]
        if sublayer == "attention":
            return None if isinstance(block.attention, SkippedAttention) else block.attention.output.dense
        return None if isinstance(block.output, SkippedOutput) else block.output.dense
