"""Tasks as data: load splits (Hub, local files, offline builtins), tokenize per kind, draw calibration.

Nothing here imports omegaconf: pipelines flatten the Hydra ``task`` config into a ``TaskSpec``.
"""

from ziplm.data.calibration import calibration_batches
from ziplm.data.features import MODEL_INPUTS, build_features, classification_features, model_input_columns
from ziplm.data.lm import lm_blocks, lm_eval_windows, lm_token_stream, sliding_windows
from ziplm.data.qa import postprocess_qa, qa_eval_features, qa_train_features, squad_references
from ziplm.data.sources import load_splits
from ziplm.data.spec import TaskSpec

__all__ = [
    "MODEL_INPUTS",
    "TaskSpec",
    "build_features",
    "calibration_batches",
    "classification_features",
    "lm_blocks",
    "lm_eval_windows",
    "lm_token_stream",
    "load_splits",
    "model_input_columns",
    "postprocess_qa",
    "qa_eval_features",
    "qa_train_features",
    "sliding_windows",
    "squad_references",
]
