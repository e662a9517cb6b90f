"""Dense bucket counts over a range of integer keys, grown on demand (used by Distribution).

A :class:`Buckets` holds ``counts[i]`` for key ``offset + i``. Counts never go down, which is what
lets a distribution join two states of one replica by the element-wise maximum.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["Buckets"]


class Buckets:
    """Monotone int64 counts for a contiguous range of bucket keys."""

    __slots__ = ("counts", "offset")

    def __init__(self, offset: int = 0, counts: npt.NDArray[np.int64] | None = None) -> None:
        self.offset = offset
        self.counts = np.zeros(0, dtype=np.int64) if counts is None else counts

    def _cover(self, low: int, high: int) -> None:
        """Grow so that keys ``[low, high)`` are in range."""
        if not len(self.counts):
            self.offset, self.counts = low, np.zeros(high - low, dtype=np.int64)
            return
        new_low = min(low, self.offset)
        new_high = max(high, self.offset + len(self.counts))
        if new_low == self.offset and new_high == self.offset + len(self.counts):
            return
        grown = np.zeros(new_high - new_low, dtype=np.int64)
        start = self.offset - new_low
        grown[start : start + len(self.counts)] = self.counts
        self.offset, self.counts = new_low, grown

    def add_keys(self, keys: npt.NDArray[np.int64], weights: npt.NDArray[np.int64]) -> None:
        """Add ``weights[i]`` to bucket ``keys[i]`` for every i (keys need not be unique)."""
        if not len(keys):
            return
        low = int(keys.min())
        dense = np.bincount(keys - low, weights=weights).astype(np.int64)
        self._cover(low, low + len(dense))
        start = low - self.offset
        self.counts[start : start + len(dense)] += dense

    def add_one(self, key: int, weight: int) -> Buckets:
        """Add ``weight`` to bucket ``key``; returns that one bucket as a new :class:`Buckets`."""
        index = key - self.offset
        if not (len(self.counts) and 0 <= index < len(self.counts)):
            self._cover(key, key + 1)
            index = key - self.offset
        self.counts[index] += weight
        return Buckets(key, self.counts[index : index + 1].copy())

    def join_max(self, other: Buckets) -> None:
        """Element-wise maximum with ``other`` (the join of two states of one replica)."""
        if not len(other.counts):
            return
        self._cover(other.offset, other.offset + len(other.counts))
        start = other.offset - self.offset
        region = self.counts[start : start + len(other.counts)]
        np.maximum(region, other.counts, out=region)

    def add_all(self, other: Buckets) -> None:
        """Element-wise sum with ``other`` (combining different replicas for a read)."""
        if not len(other.counts):
            return
        self._cover(other.offset, other.offset + len(other.counts))
        start = other.offset - self.offset
        self.counts[start : start + len(other.counts)] += other.counts

    def slice(self, low: int, high: int) -> Buckets:
        """A copy of the keys ``[low, high)`` that lie in range."""
        start = max(low - self.offset, 0)
        stop = min(high - self.offset, len(self.counts))
        if start >= stop:
            return Buckets()
        return Buckets(self.offset + start, self.counts[start:stop].copy())

    def trimmed(self) -> Buckets:
        """A copy without zero counts at either end (the canonical form)."""
        nonzero = np.flatnonzero(self.counts)
        if not len(nonzero):
            return Buckets()
        first, last = int(nonzero[0]), int(nonzero[-1]) + 1
        return Buckets(self.offset + first, self.counts[first:last].copy())

    def total(self) -> int:
        """The sum of all counts."""
        return int(self.counts.sum())

    def key_at_rank(self, rank: float, descending: bool = False) -> int:
        """The key holding the element of 0-based ``rank`` (``rank < total()``) in key order."""
        counts = self.counts[::-1] if descending else self.counts
        position = int(np.searchsorted(np.cumsum(counts), rank, side="right"))
        position = min(position, len(counts) - 1)
        return self.offset + (len(counts) - 1 - position if descending else position)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Buckets):
            return NotImplemented
        mine, theirs = self.trimmed(), other.trimmed()
        return mine.offset == theirs.offset and np.array_equal(mine.counts, theirs.counts)

    __hash__ = None  # type: ignore[assignment]
