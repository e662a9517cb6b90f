"""Entries of a few owners in a sorted code array, found by binary search."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["entries_of"]

Int64Array = npt.NDArray[np.int64]


def entries_of(
    codes: Int64Array, first: Int64Array, end: Int64Array
) -> tuple[Int64Array, Int64Array]:
    """Positions in the sorted ``codes`` of the values in ``[first[i], end[i])`` for every ``i``
    (ascending, disjoint ranges in ascending order), and each position's ``i``.

    Two binary searches per owner and one pass over the result: the cost follows the owners
    asked about and their entries, not the length of ``codes``.
    """
    low = np.searchsorted(codes, first)
    high = np.searchsorted(codes, end)
    lengths = high - low
    owner = np.repeat(np.arange(len(first), dtype=np.int64), lengths)
    # Positions low[i] .. high[i]-1 of every owner, flattened without a Python loop.
    offsets = np.repeat(low - (np.cumsum(lengths) - lengths), lengths)
    positions = np.arange(int(lengths.sum()), dtype=np.int64) + offsets
    return positions, owner
