"""ziplm: inference-aware structured pruning of Transformer language models (ZipLM)."""

__version__ = "0.1.0"
