"""Level grids for heads and FFN neurons."""

from __future__ import annotations

from itertools import pairwise

import pytest

from ziplm.core.levels import ffn_levels, head_levels, to_group_counts


def test_bert_base_ffn_grid():
    levels = ffn_levels(3072)
    assert len(levels) == 45
    assert levels[:6] == [3072, 2765, 2488, 2239, 2016, 1814]
    assert levels[-2:] == [33, 0]
    assert all(a > b for a, b in pairwise(levels))


def test_head_levels():
    assert head_levels(12) == list(range(12, -1, -1))
    assert head_levels(1) == [1, 0]
    with pytest.raises(ValueError, match="n_heads must be an int >= 1"):
        head_levels(0)


@pytest.mark.parametrize(("round_to", "group_size"), [(8, 1), (32, 1), (1, 64), (32, 8), (24, 16)])
def test_rounded_grids_are_decreasing_multiples_from_full_to_zero(round_to: int, group_size: int):
    levels = ffn_levels(3072, round_to=round_to, group_size=group_size)
    step = {(8, 1): 8, (32, 1): 32, (1, 64): 64, (32, 8): 32, (24, 16): 48}[(round_to, group_size)]
    assert levels[0] == 3072 and levels[-1] == 0
    assert all(c % step == 0 for c in levels[1:-1])
    assert all(a > b for a, b in pairwise(levels))


def test_rounding_to_32():
    assert ffn_levels(3072, round_to=32)[:5] == [3072, 2752, 2496, 2240, 2016]


def test_small_widths_deduplicate():
    assert ffn_levels(10) == [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert ffn_levels(4, ratio=0.5, min_fraction=0.3) == [4, 2, 0]


def test_group_counts():
    assert to_group_counts([3072, 2048, 64, 0], 64) == [48, 32, 1, 0]
    with pytest.raises(ValueError, match=r"\[2765\] are not multiples of group_size=64"):
        to_group_counts([3072, 2765], 64)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d_ff": 0}, "d_ff must be an int >= 1"),
        ({"ratio": 1.0}, "ratio must be in"),
        ({"min_fraction": 0.0}, "min_fraction must be in"),
        ({"round_to": 0}, "round_to must be an int >= 1"),
        ({"group_size": 5}, "not a multiple of group_size=5"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        ffn_levels(**({"d_ff": 3072} | kwargs))
