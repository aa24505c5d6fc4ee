"""Level grids: which structure counts the OBS database stores per prunable module (spec §3).

A level is a number of *kept* structures counted in the original width (heads, or FFN neurons), so keys
stay valid when a model is re-pruned gradually. Grids are strictly decreasing and end at 0 (the whole
module removed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["ffn_levels", "head_levels", "level_grids", "to_group_counts"]


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def head_levels(n_heads: int) -> list[int]:
    """Kept-head counts for an attention block: every count from ``n_heads`` down to 0.

    Args:
        n_heads: Number of attention heads (>= 1).

    Returns:
        ``[n_heads, n_heads − 1, …, 0]`` (n_heads + 1 levels; 13 for BERT-base).
    """
    _check_int("n_heads", n_heads, 1)
    return list(range(n_heads, -1, -1))


def ffn_levels(
    d_ff: int,
    ratio: float = 0.9,
    min_fraction: float = 0.01,
    round_to: int = 1,
    group_size: int = 1,
) -> list[int]:
    """Geometric grid of kept FFN-neuron counts.

    ``round(ratioᵏ · d_ff)`` for k = 0, 1, … while the count exceeds ``min_fraction · d_ff``, then 0. With
    ``round_to`` or ``group_size`` > 1, counts are rounded to the nearest multiple of
    ``lcm(round_to, group_size)`` (hardware-friendly shapes; whole neuron groups); duplicates are dropped,
    ``d_ff`` stays first and 0 last. Halves round up (2764.5 → 2765), not to even.

    Args:
        d_ff: FFN width (neurons), a multiple of ``group_size``.
        ratio: Kept fraction from one level to the next, in (0, 1).
        min_fraction: The grid stops once ``ratioᵏ · d_ff`` is at or below this fraction of d_ff, in (0, 1).
        round_to: Round kept counts to multiples of this (e.g. 8 or 32); 1 = no rounding.
        group_size: Neurons pruned together; every count is a multiple of it.

    Returns:
        Strictly decreasing kept-neuron counts (BERT-base d_ff = 3072: 3072, 2765, 2488, …, 33, 0; 45 levels).
    """
    _check_int("d_ff", d_ff, 1)
    _check_int("round_to", round_to, 1)
    _check_int("group_size", group_size, 1)
    if not 0 < ratio < 1:
        raise ValueError(f"ratio must be in (0, 1), got {ratio!r}")
    if not 0 < min_fraction < 1:
        raise ValueError(f"min_fraction must be in (0, 1), got {min_fraction!r}")
    if d_ff % group_size != 0:
        raise ValueError(f"d_ff={d_ff} is not a multiple of group_size={group_size}")
    step = math.lcm(round_to, group_size)
    counts = [d_ff]
    k = 1
    while (raw := ratio**k * d_ff) > min_fraction * d_ff:
        rounded = step * math.floor(raw / step + 0.5)
        if 0 < rounded < counts[-1]:
            counts.append(rounded)
        k += 1
    counts.append(0)
    return counts


def level_grids(
    n_heads: int, d_ff: int, ffn_ratio: float = 0.9, ffn_round_to: int = 1, ffn_group_size: int = 1
) -> tuple[list[int], list[int]]:
    """The (head, FFN) level grids of a model: the one function both the latency table (which times these
    levels) and the levels database (which stores them) take their grids from, so the two always agree.

    Args:
        n_heads: Attention heads per layer.
        d_ff: FFN width (neurons).
        ffn_ratio, ffn_round_to, ffn_group_size: :func:`ffn_levels`'s ``ratio``, ``round_to``, ``group_size``.
    """
    return head_levels(n_heads), ffn_levels(d_ff, ratio=ffn_ratio, round_to=ffn_round_to, group_size=ffn_group_size)


def to_group_counts(neuron_counts: Sequence[int], group_size: int) -> list[int]:
    """Converts kept-neuron counts into kept-group counts for :func:`ziplm.core.obs.prune_groups`.

    Args:
        neuron_counts: Kept-neuron counts, each a multiple of ``group_size``.
        group_size: Neurons per group.

    Returns:
        ``[c // group_size for c in neuron_counts]``.
    """
    _check_int("group_size", group_size, 1)
    bad = [c for c in neuron_counts if c % group_size != 0]
    if bad:
        raise ValueError(f"neuron counts {bad} are not multiples of group_size={group_size}")
    return [c // group_size for c in neuron_counts]
