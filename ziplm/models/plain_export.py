"""A layer-drop member as a stock Hugging Face model: whole layers only, no ziplm needed to load it.

Stock transformers configs have one width for every layer, so only members whose layers are each whole
or fully removed fit: the kept layers become a shorter stack of the same HF class (a DistilBERT-style
student). Nothing here knows family key names; the layers are found by identity and copied by state dict.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn


def _layers_prefix(model: nn.Module, layers: nn.ModuleList) -> str:
    """Dotted name of `layers` inside `model` (found by identity, so no family key names are needed)."""
    for name, module in model.named_modules():
        if module is layers:
            return name
    raise ValueError(f"the layer list is not a submodule of {type(model).__name__}")


def plain_model(model: nn.Module, layers: nn.ModuleList, kept: Sequence[int], structure_key: str) -> nn.Module:
    """A fresh `type(model)` with ``num_hidden_layers=len(kept)``, holding the member's weights.

    Every tensor outside the layer stack is copied as is; kept layer ``kept[i]`` becomes layer ``i``.
    The ziplm structure key is removed from the config, so the result is a plain HF model.
    """
    if not kept:
        raise ValueError("the member keeps no Transformer layer; there is no model to export")
    prefix = _layers_prefix(model, layers) + "."
    config: Any = copy.deepcopy(model.config)
    if structure_key in config.__dict__:
        delattr(config, structure_key)
    config.num_hidden_layers = len(kept)  # GPT-2 maps this onto n_layer
    dtype = next(model.parameters()).dtype
    plain: Any = type(model)(config).to(dtype)
    plain.tie_weights()  # a model built outside from_pretrained leaves tied embeddings separate
    outside = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
    missing, unexpected = plain.load_state_dict(outside, strict=False)
    missing = [k for k in missing if not k.startswith(prefix)]
    if missing or unexpected:
        raise ValueError(
            f"the plain model does not match the member: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    target = cast(nn.ModuleList, plain.get_submodule(prefix[:-1]))
    for position, index in enumerate(kept):
        target[position].load_state_dict(layers[index].state_dict())  # strict: a whole layer has every key
    return cast(nn.Module, plain.eval())


def save_plain(model: nn.Module, target: Path, tokenizer_source: Path | None) -> Path:
    """`save_pretrained` the model (and the member's tokenizer when it has one) into `target`."""
    model.save_pretrained(target)  # type: ignore[operator]
    if tokenizer_source is not None:
        import transformers

        transformers.AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(target)
    return target


def reload_plain(model: nn.Module, folder: Path) -> nn.Module:
    """Load `folder` with stock transformers only: the HF class the member was built from."""
    loaded: nn.Module = type(model).from_pretrained(folder, local_files_only=True)  # type: ignore[attr-defined]
    return loaded.eval()


def _output(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids, attention_mask=mask)
    logits = getattr(out, "logits", None)
    return (logits if logits is not None else out[0]).float()


@torch.no_grad()
def max_abs_diff(reference: nn.Module, other: nn.Module, seq_length: int, seed: int = 0) -> float:
    """Max |difference| of the two models' outputs on a random batch (last row partly padded), in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    config: Any = reference.config
    vocab = int(config.vocab_size)
    ids = torch.randint(0, vocab, (2, seq_length), generator=generator)
    mask = torch.ones_like(ids)
    mask[-1, seq_length // 2 :] = 0
    reference.eval()
    other.eval()
    return float((_output(reference, ids, mask) - _output(other, ids, mask)).abs().max())
