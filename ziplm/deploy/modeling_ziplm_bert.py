"""A BERT encoder with per-layer head counts and FFN widths, loadable without ziplm.

This file is copied verbatim into a ``sentence-transformers`` export folder and named in the folder's
``config.json`` ``auto_map``, so ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` (and
``SentenceTransformer(folder, trust_remote_code=True)``) rebuild a pruned member with torch and
transformers alone. Stock ``BertConfig`` has one width for every layer; pruned members do not, so the
config adds ``layer_heads`` / ``layer_ffn`` (0 = that sublayer removed). Keep it importable on its own:
no ziplm imports, nothing beyond torch and transformers.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import BertConfig, BertModel


class ZiplmBertConfig(BertConfig):
    """`BertConfig` plus the kept attention heads and FFN neurons of every layer."""

    model_type = "ziplm_bert"

    def __init__(self, layer_heads: list[int] | None = None, layer_ffn: list[int] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.layer_heads = list(layer_heads) if layer_heads is not None else None
        self.layer_ffn = list(layer_ffn) if layer_ffn is not None else None


class SkippedAttention(nn.Module):
    """Removed attention sublayer of a post-LN layer: returns its input (no residual-add, no LayerNorm)."""

    def forward(self, hidden_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, None]:
        return hidden_states, None


class SkippedIntermediate(nn.Module):
    """Removed FFN, part 1: FC1 + activation become a pass-through."""

    def forward(self, hidden_states: Any) -> Any:
        return hidden_states


class SkippedOutput(nn.Module):
    """Removed FFN, part 2: return the residual input (no add, no LayerNorm)."""

    def forward(self, hidden_states: Any, input_tensor: Any) -> Any:
        return input_tensor


class ZiplmBertModel(BertModel):
    """`BertModel` whose layers are narrowed (or have sublayers removed) after construction, so the stock
    forward pass runs unchanged and the checkpoint's tensor shapes load as saved."""

    config_class = ZiplmBertConfig

    def __init__(self, config: ZiplmBertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        n = config.num_hidden_layers
        heads = config.layer_heads or [config.num_attention_heads] * n
        ffn = config.layer_ffn or [config.intermediate_size] * n
        if len(heads) != n or len(ffn) != n:
            raise ValueError(f"layer_heads/layer_ffn need {n} entries, got {len(heads)}/{len(ffn)}")
        head_dim = config.hidden_size // config.num_attention_heads
        for layer, h, f in zip(self.encoder.layer, heads, ffn, strict=True):
            _narrow(layer, int(h), int(f), head_dim, config.hidden_size)
        self.post_init()


def _narrow(layer: Any, heads: int, neurons: int, head_dim: int, hidden: int) -> None:
    """Give one layer `heads` heads and `neurons` FFN neurons (0: remove that sublayer)."""
    if heads == 0:
        layer.attention = SkippedAttention()
    else:
        attn = layer.attention.self
        width = heads * head_dim
        for name in ("query", "key", "value"):
            setattr(attn, name, nn.Linear(hidden, width))
        layer.attention.output.dense = nn.Linear(width, hidden)
        attn.num_attention_heads = heads
        attn.all_head_size = width
    if neurons == 0:
        layer.intermediate = SkippedIntermediate()
        layer.output = SkippedOutput()
    else:
        layer.intermediate.dense = nn.Linear(hidden, neurons)
        layer.output.dense = nn.Linear(neurons, hidden)
