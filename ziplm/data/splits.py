"""Split names with ``datasets`` slicing syntax, resolved against already-loaded splits.

``train``, ``train[:1000]``, ``train[10%:]``, ``train[:99.5%]``: the syntax of ``datasets``' split
strings, extended to fractional percents (``datasets`` itself only parses whole ones, and the
OpenWebText task holds out 0.5%). Percent bounds round to the closest row, like ``datasets``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import datasets

_SPEC = re.compile(
    r"^(?P<split>[\w.-]+)"
    r"(?:\[(?P<start>-?\d+(?:\.\d+)?%?)?:(?P<stop>-?\d+(?:\.\d+)?%?)?\])?$"
)


@dataclass(frozen=True)
class SplitSpec:
    """A parsed split string.

    Attributes:
        split: Name of the underlying split (``train`` in ``train[:99.5%]``).
        start: Slice start as written (``"10%"``, ``"-500"``), or None.
        stop: Slice stop as written, or None.
    """

    split: str
    start: str | None = None
    stop: str | None = None

    def bounds(self, num_rows: int) -> tuple[int, int]:
        """Absolute ``[start, stop)`` row bounds of the slice on a split of `num_rows` rows."""
        start = _absolute(self.start, num_rows, default=0)
        stop = _absolute(self.stop, num_rows, default=num_rows)
        return start, max(start, stop)


def _absolute(bound: str | None, num_rows: int, default: int) -> int:
    if bound is None:
        return default
    value = round(float(bound[:-1]) * num_rows / 100) if bound.endswith("%") else int(float(bound))
    if value < 0:
        value += num_rows
    return min(max(value, 0), num_rows)


def parse_split(spec: str) -> SplitSpec:
    """Parse ``name`` or ``name[start:stop]`` (rows or percents).

    Raises:
        ValueError: if `spec` is not in that syntax (``+`` unions are not supported).
    """
    match = _SPEC.match(spec.strip())
    if match is None:
        raise ValueError(
            f"cannot parse split {spec!r}: expected 'name' or 'name[start:stop]' with row counts or "
            "percents, e.g. 'train', 'train[:1000]', 'train[:99.5%]'"
        )
    return SplitSpec(match["split"], match["start"], match["stop"])


def select_split(splits: Mapping[str, datasets.Dataset], spec: str, source: str) -> datasets.Dataset:
    """The rows of `splits` that the split string `spec` names.

    Args:
        splits: Loaded splits by name.
        spec: Split string, e.g. ``validation`` or ``train[:99.5%]``.
        source: Where the splits came from, for the error message.

    Raises:
        ValueError: if the split is not among `splits` (the message lists the available ones).
    """
    parsed = parse_split(spec)
    if parsed.split not in splits:
        raise ValueError(f"split {parsed.split!r} not in {source}; available: {sorted(splits)}")
    dataset = splits[parsed.split]
    if parsed.start is None and parsed.stop is None:
        return dataset
    start, stop = parsed.bounds(len(dataset))
    return dataset.select(range(start, stop))
