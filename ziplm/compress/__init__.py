"""Compound compression on top of a structured family member: unstructured sparsity (OBS or magnitude), INT8."""

from ziplm.compress.compound import (
    UNSTRUCTURED_METHODS,
    CompressionSettings,
    SparsityReport,
    compress,
    layer_matrices,
    load_int8,
    quantize_int8,
    sparsity_report,
)

__all__ = [
    "UNSTRUCTURED_METHODS",
    "CompressionSettings",
    "SparsityReport",
    "compress",
    "layer_matrices",
    "load_int8",
    "quantize_int8",
    "sparsity_report",
]
