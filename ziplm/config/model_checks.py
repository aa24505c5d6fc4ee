"""Attention-shape checks of the ``model`` group: head counts, grouped-query attention, query-head pruning.

Split from ``ziplm.config.validate`` (at its size limit); like it, imports neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ziplm.models.spec import GQA_FAMILIES, check_query_head_pruning


def divisor_near(n: int, k: int) -> int:
    """The divisor of `n` closest to `k` (a working example value)."""
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - k), d))


def check_attention_shape(values: Mapping[str, Any], g: Any) -> None:
    """`g` is validate's ``_Group("model", values)``; its ``fail`` raises the one-line message."""
    family = values.get("family")
    g.integer("num_key_value_heads", 1, 8, optional=True)
    g.integer("head_dim", 1, 64, optional=True)
    hidden, heads = values.get("hidden_size"), values.get("num_heads")
    kv, head_dim = values.get("num_key_value_heads"), values.get("head_dim")
    if family not in GQA_FAMILIES:
        if kv is not None and kv != heads:
            g.fail("num_key_value_heads", f"null for family {family} (no grouped-query attention)", "null")
        if head_dim is not None:
            g.fail("head_dim", f"null for family {family} (its head width is hidden_size / num_heads)", "null")
    if heads is not None and kv is not None and heads % kv:
        g.fail(
            "num_key_value_heads",
            f"a divisor of model.num_heads={heads} (query heads share KV heads in equal groups)",
            divisor_near(heads, kv),
        )
    if hidden is not None and heads is not None and head_dim is None and hidden % heads:
        g.fail("num_heads", f"a divisor of model.hidden_size={hidden}", divisor_near(hidden, heads))
    if values.get("prune_query_heads"):
        check_query_head_pruning(str(values.get("name")), str(family), heads, kv)
