"""Family-agnostic pieces of physical surgery: slicing linear maps, and real identity modules.

transformers 5.x dropped its head-pruning API, so we own this. Slicing builds *new* parameters of
the smaller shape (rather than masking) so that the pruned model really is smaller and faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def _index(ids: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.as_tensor(list(ids), dtype=torch.long, device=device)


def slice_linear(linear: nn.Linear, ids: Sequence[int], dim: int) -> nn.Linear:
    """A new nn.Linear keeping output rows (dim=0) or input columns (dim=1) `ids`.

    Slicing inputs keeps the bias whole (it belongs to the outputs).
    """
    w = linear.weight.detach()
    index = _index(ids, w.device)
    new_w = w.index_select(dim, index).clone()
    out_f, in_f = new_w.shape
    new = nn.Linear(in_f, out_f, bias=linear.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(new_w)
        if linear.bias is not None and new.bias is not None:
            b = linear.bias.detach()
            new.bias.copy_(b.index_select(0, index) if dim == 0 else b)
    new.weight.requires_grad_(linear.weight.requires_grad)
    return new


def slice_conv1d(conv: Any, ids: Sequence[int], dim: int) -> nn.Module:
    """Slice HF's Conv1D (weight stored (d_in, d_out)): dim=0 keeps outputs, dim=1 keeps inputs.

    `dim` follows nn.Linear semantics so callers need not think about the transposed storage.
    """
    from transformers.pytorch_utils import Conv1D

    w = conv.weight.detach()  # (d_in, d_out)
    index = _index(ids, w.device)
    new_w = w.index_select(1 - dim, index).clone()
    n_in, n_out = new_w.shape
    new = Conv1D(n_out, n_in)
    new.to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(new_w)
        b = conv.bias.detach()
        new.bias.copy_(b.index_select(0, index) if dim == 0 else b)
    return new


class SkippedAttention(nn.Module):
    """Post-LN (BERT) attention sublayer removed: returns its input, skipping residual-add + LayerNorm.

    Matches HF's ``(attention_output, attention_weights)`` return convention.
    """

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        return hidden_states, None


class SkippedIntermediate(nn.Module):
    """Post-LN (BERT) FFN removed, part 1: FC1 + activation become a no-op pass-through."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states


class SkippedOutput(nn.Module):
    """Post-LN (BERT) FFN removed, part 2: return the residual input, skipping add + LayerNorm."""

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return input_tensor


class ZeroBranch(nn.Module):
    """Pre-LN (GPT-2) residual branch removed: contributes exactly nothing, so x -> x.

    Returns a 0-dim zero (broadcast in the residual add) instead of computing anything; with
    ``as_tuple`` it mimics HF attention's ``(output, weights)`` return.
    """

    def __init__(self, as_tuple: bool) -> None:
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        zero = hidden_states.new_zeros(())
        return (zero, None) if self.as_tuple else zero


class RemovedCachedAttention(nn.Module):
    """Pre-norm decoder self-attention removed (x -> x) that still advances the KV cache (GPT-2, OPT, Llama).

    HF decoders read positions and mask sizes from the cache of one layer (``get_seq_length()`` reads
    layer 0), so a removed attention must keep its cache slot as long as the others. Each call appends
    one zero key/value of width 1 per token: one float per token, and ``numel() > 0`` (an empty tensor
    would read as "nothing cached"). Returns HF attention's ``(output, weights)`` with a 0-dim zero.

    The cache comes by keyword (``cache``, or the older ``past_key_values``), as every supported block
    passes it; in an ``EncoderDecoderCache`` (GPT-2 with cross-attention) the self-attention half is updated.
    The module holds no parameters, so members saved with any earlier removed-attention module load alike.
    """

    def __init__(self, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        cache = getattr(cache, "self_attention_cache", cache)
        if cache is not None:
            placeholder = hidden_states.new_zeros(hidden_states.shape[0], 1, hidden_states.shape[1], 1)
            cache.update(placeholder, placeholder, self.layer_idx)
        return hidden_states.new_zeros(()), None
