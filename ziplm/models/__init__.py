"""Model families: adapters (the only code that knows HF module names), surgery, save/load."""

from ziplm.models.adapter import ModelAdapter, current_structure, get_output_weight, set_output_weight
from ziplm.models.build import ModelSpec, build_model, build_tokenizer
from ziplm.models.io import count_parameters, load_pruned, save_pruned
from ziplm.models.registry import ADAPTERS, adapter_for, adapter_for_family

__all__ = [
    "ADAPTERS",
    "ModelAdapter",
    "ModelSpec",
    "adapter_for",
    "adapter_for_family",
    "build_model",
    "build_tokenizer",
    "count_parameters",
    "current_structure",
    "get_output_weight",
    "load_pruned",
    "save_pruned",
    "set_output_weight",
]
