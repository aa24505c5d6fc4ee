"""Model families: adapters (the only code that knows HF module names), surgery, save/load.

Names load lazily (PEP 562), so ``ziplm.models.spec`` — plain Python, registered and validated by the config
layer before every command — imports without torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "ADAPTERS": "registry",
    "ModelAdapter": "adapter",
    "ModelSpec": "spec",
    "adapter_for": "registry",
    "adapter_for_family": "registry",
    "build_model": "build",
    "build_tokenizer": "build",
    "count_parameters": "io",
    "current_structure": "adapter",
    "get_output_weight": "adapter",
    "load_pruned": "io",
    "save_pruned": "io",
    "set_output_weight": "adapter",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'ziplm.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ziplm.models.{_HOMES[name]}"), name)
