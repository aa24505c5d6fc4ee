"""Block Influence (ShortGPT, Men et al. 2024): how much each transformer block turns its hidden states.

BI_i = 1 − mean over tokens of cos(x_in, x_out), block i's input and output hidden states on calibration
data. A block whose output points where its input did adds little to the residual stream, so the
blocks of lowest BI are the first to drop (`blockdrop`, the depth-pruning baseline). Padding tokens are
excluded, as in the Hessians (`ziplm.core.hessian`): their states belong to no real sequence.

Forward hooks on the adapter's blocks make this family-agnostic (a block may return a tensor or a
tuple led by one). Pure torch: no Lightning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ziplm.core.hessian import TokenMask
from ziplm.models.adapter import current_structure
from ziplm.models.registry import adapter_for

Batches = Iterable[Mapping[str, torch.Tensor]]


def _states(value: Any) -> torch.Tensor:
    """The hidden states in a block's output (HF blocks return a tensor, or a tuple led by it)."""
    while isinstance(value, tuple | list):
        value = value[0]
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"a block returned {type(value).__name__}, not hidden states")
    return value


def block_influence(model: nn.Module, batches: Batches, layers: Sequence[int] | None = None) -> dict[int, float]:
    """BI of each block in `layers` (default all) over the non-padding tokens of `batches`.

    Batches are model inputs (``input_ids``, ``attention_mask``, ...) and go to the model's device; the
    model runs in eval mode without gradients and is left as it was.

    Raises:
        ValueError: no batch, a layer index out of range, or no token that is not padding.
    """
    blocks = adapter_for(model).layers(model)
    chosen = list(range(len(blocks))) if layers is None else sorted({int(i) for i in layers})
    bad = [i for i in chosen if not 0 <= i < len(blocks)]
    if bad:
        raise ValueError(f"layers {bad} outside 0..{len(blocks) - 1} (the model has {len(blocks)} blocks)")
    sums, counts = dict.fromkeys(chosen, 0.0), dict.fromkeys(chosen, 0)
    token_mask = TokenMask()

    def hook(index: int) -> Any:
        def record(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            x_in = args[0] if args else kwargs["hidden_states"]
            x_out = _states(output)
            cos = F.cosine_similarity(x_in.detach().float(), x_out.detach().float(), dim=-1)
            mask = token_mask.current
            if mask is not None:
                if mask.numel() != cos.numel():
                    raise ValueError(
                        f"attention_mask {tuple(mask.shape)} does not match hidden states {tuple(cos.shape)}"
                    )
                cos = cos[mask.reshape(cos.shape).to(device=cos.device, dtype=torch.bool)]
            sums[index] += float(cos.double().sum())
            counts[index] += cos.numel()

        return record

    device = next(model.parameters()).device
    handles = [blocks[i].register_forward_hook(hook(i), with_kwargs=True) for i in chosen]
    was_training, ran = model.training, False
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                inputs = {k: v.to(device) for k, v in batch.items()}
                token_mask.set(inputs.get("attention_mask"))
                model(**inputs)
                ran = True
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not ran:
        raise ValueError("Block Influence needs calibration batches: got none")
    if any(counts[i] == 0 for i in chosen):
        raise ValueError("the calibration batches hold no token: every position is masked as padding")
    return {i: 1.0 - sums[i] / counts[i] for i in chosen}


def most_influential(scores: Mapping[int, float], count: int) -> list[int]:
    """The `count` layers of highest BI (ties: the earlier layer), in layer order."""
    if not 1 <= count <= len(scores):
        raise ValueError(f"can keep 1..{len(scores)} of the {len(scores)} scored layers, not {count}")
    ranked = sorted(scores, key=lambda i: (-scores[i], i))
    return sorted(ranked[:count])


def live_layers(model: nn.Module) -> list[int]:
    """Layers that still hold a sublayer (a dropped layer is the identity: nothing to score or keep)."""
    structure = current_structure(model, adapter_for(model).dims(model))
    return [i for i, layer in enumerate(structure.layers) if layer.heads or layer.neurons]


def influential_layers(model: nn.Module, batches: Batches, count: int) -> tuple[list[int], list[float | None]]:
    """The layers to keep (the `count` live ones of highest BI; all live ones if fewer) and every layer's
    BI for the record (None for a layer already dropped)."""
    live = live_layers(model)
    scores = block_influence(model, batches, live)
    keep = most_influential(scores, min(count, len(live)))
    return keep, [scores.get(i) for i in range(len(adapter_for(model).layers(model)))]
