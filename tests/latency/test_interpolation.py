"""One interpolation of table times: the table's levels between anchors and the search's prices of levels the
table lacks both come from `ziplm.core.latency.level_time`."""

from __future__ import annotations

import pytest

from ziplm.core.latency import level_time
from ziplm.core.levels import ffn_levels
from ziplm.latency.anchors import anchor_levels, through_anchors
from ziplm.pruning import targets


def test_through_anchors_is_level_time_at_every_level() -> None:
    grid = ffn_levels(3072)
    anchors = {k: 1e-4 * k**0.9 + (2e-3 if k else 0.0) for k in anchor_levels(grid, 7)}
    table = through_anchors(grid, anchors)
    assert list(table) == sorted(grid)
    assert table == {k: level_time(anchors, k) for k in grid}
    assert all(table[k] == anchors[k] for k in anchors)  # exact at anchors
    assert targets.level_time is level_time  # the search prices levels with the same function


def test_level_time_refuses_levels_outside_the_measured_ones() -> None:
    with pytest.raises(KeyError, match="outside"):
        level_time({0: 0.0, 4: 1.0}, 5)
    assert level_time({0: 0.0, 4: 1.0}, 1) == pytest.approx(0.25)
