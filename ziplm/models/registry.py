"""Family name -> adapter, and picking the adapter for a loaded HF model."""

from __future__ import annotations

from torch import nn

from ziplm.models.adapter import ModelAdapter
from ziplm.models.bert import BertAdapter
from ziplm.models.gpt2 import GPT2Adapter
from ziplm.models.llama import LLAMA_FAMILIES, LlamaAdapter
from ziplm.models.opt import OPTAdapter

# Keyed by HF ``config.model_type``; Mistral/Qwen2/Qwen3 share Llama's block layout (one adapter class).
ADAPTERS: dict[str, ModelAdapter] = {
    "bert": BertAdapter(),
    "gpt2": GPT2Adapter(),
    **{family: LlamaAdapter(family) for family in LLAMA_FAMILIES},
    "opt": OPTAdapter(),
}


def adapter_for_family(family: str) -> ModelAdapter:
    """The adapter registered for `family`, or a clear error listing the known families."""
    try:
        return ADAPTERS[family]
    except KeyError:
        raise ValueError(
            f"unsupported model family {family!r} (HF config.model_type); ziplm supports: {', '.join(sorted(ADAPTERS))}"
        ) from None


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter for an HF model, chosen by ``config.model_type``."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise TypeError(f"{type(model).__name__} is not a Hugging Face model (no config.model_type)")
    return adapter_for_family(str(model_type))
