"""Tasks as data: load splits (Hub, local files, offline builtins), tokenize per kind, draw calibration.

Nothing here imports omegaconf: pipelines flatten the Hydra ``task`` config into a ``TaskSpec``.
Names load lazily (PEP 562), so ``ziplm.data.spec`` — plain Python, used by the config validation that runs
before every command — imports without torch or datasets.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "calibration_batches": "calibration",
    "MODEL_INPUTS": "features",
    "build_features": "features",
    "classification_features": "features",
    "model_input_columns": "features",
    "lm_blocks": "lm",
    "lm_eval_windows": "lm",
    "lm_token_stream": "lm",
    "sliding_windows": "lm",
    "postprocess_qa": "qa",
    "qa_eval_features": "qa",
    "qa_train_features": "qa",
    "squad_references": "qa",
    "load_splits": "sources",
    "TaskSpec": "spec",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'ziplm.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ziplm.data.{_HOMES[name]}"), name)
