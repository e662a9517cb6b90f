"""The ``distribution`` kind: per-replica logarithmic buckets plus count, sum, min and max.

Buckets use :class:`~crdtstream.crdt.mapping.LogMapping`, the mapping of
:class:`~crdtstream.crdt.distribution.Distribution`, so a value lands in the same bucket in both.
Positive values go to ``positive`` buckets, negative values to ``negative`` buckets by magnitude,
zero to ``zero_count``. Counts are floats because a statsd sample rate weights them (``@0.1``
counts 10).

A replica's history is linear, so of two states of the same ``(key, slice, replica)`` cell the
one with the higher ``sequence`` (the writer's store version) contains the other; join keeps it.
Sums of negative values are not monotone, which is why the join picks a whole state rather than
taking maxima field by field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from crdtstream.crdt.mapping import LogMapping

__all__ = ["DistributionCell", "DistributionValue", "merge_buckets"]

_EMPTY_KEYS = np.zeros(0, dtype=np.int64)
_EMPTY_COUNTS = np.zeros(0, dtype=np.float64)


def merge_buckets(
    keys: list[npt.NDArray[np.int64]], counts: list[npt.NDArray[np.float64]]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Sum bucket counts by key over several bucket sets; keys come back sorted."""
    all_keys = np.concatenate([_EMPTY_KEYS, *keys])
    if len(all_keys) == 0:
        return _EMPTY_KEYS, _EMPTY_COUNTS
    unique, inverse = np.unique(all_keys, return_inverse=True)
    sums = np.bincount(inverse, weights=np.concatenate([_EMPTY_COUNTS, *counts]))
    return unique.astype(np.int64), sums.astype(np.float64)


@dataclass(slots=True, eq=False)
class DistributionCell:
    """One replica's distribution of one key in one slice."""

    sequence: int = 0
    count: float = 0.0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    zero_count: float = 0.0
    positive_keys: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY_KEYS)
    positive_counts: npt.NDArray[np.float64] = field(default_factory=lambda: _EMPTY_COUNTS)
    negative_keys: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY_KEYS)
    negative_counts: npt.NDArray[np.float64] = field(default_factory=lambda: _EMPTY_COUNTS)
    changed_version: int = field(default=0, compare=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DistributionCell):
            return NotImplemented
        return self.to_wire()[:2] == other.to_wire()[:2] and all(
            np.array_equal(a, b)
            for a, b in zip(self.to_wire()[2:], other.to_wire()[2:], strict=True)
        )

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> DistributionCell:
        """A copy that later adds to either side do not affect (bucket arrays are replaced, never
        written in place, so they can be shared)."""
        return dataclasses.replace(self)

    def joined(self, other: DistributionCell) -> DistributionCell:
        """The join: the later state of the replica (ties broken by the state, deterministic)."""
        mine = (self.sequence, self.count, self.total)
        theirs = (other.sequence, other.count, other.total)
        return other if theirs > mine else self

    def to_wire(self) -> list[Any]:
        """The cell as msgpack-able values."""
        return [
            self.sequence,
            [self.count, self.total, self.minimum, self.maximum, self.zero_count],
            self.positive_keys,
            self.positive_counts,
            self.negative_keys,
            self.negative_counts,
        ]

    @classmethod
    def from_wire(cls, body: Any) -> DistributionCell:
        """Rebuild a cell from :meth:`to_wire`; ValueError/TypeError on a bad shape."""
        sequence, stats, positive_keys, positive_counts, negative_keys, negative_counts = body
        count, total, minimum, maximum, zero_count = (float(x) for x in stats)
        if not isinstance(sequence, int) or sequence < 0:
            raise ValueError("distribution sequence must be a non-negative int")
        for keys, counts in ((positive_keys, positive_counts), (negative_keys, negative_counts)):
            if not (isinstance(keys, np.ndarray) and isinstance(counts, np.ndarray)):
                raise TypeError("distribution buckets must be arrays")
            if keys.dtype != np.int64 or counts.dtype != np.float64 or keys.shape != counts.shape:
                raise ValueError("distribution buckets must be int64 keys with float64 counts")
            if keys.ndim != 1:
                raise ValueError("distribution buckets must be one-dimensional")
        return cls(
            sequence,
            count,
            total,
            minimum,
            maximum,
            zero_count,
            positive_keys,
            positive_counts,
            negative_keys,
            negative_counts,
        )


@dataclass(frozen=True, slots=True)
class DistributionValue:
    """A distribution read from the store: the merge of every replica's and slice's cells."""

    mapping: LogMapping
    count: float
    total: float
    minimum: float
    maximum: float
    zero_count: float
    positive_keys: npt.NDArray[np.int64]
    positive_counts: npt.NDArray[np.float64]
    negative_keys: npt.NDArray[np.int64]
    negative_counts: npt.NDArray[np.float64]

    @classmethod
    def of(cls, mapping: LogMapping, cells: list[DistributionCell]) -> DistributionValue:
        """Merge the cells of several replicas and slices into one value."""
        positive = merge_buckets(
            [c.positive_keys for c in cells], [c.positive_counts for c in cells]
        )
        negative = merge_buckets(
            [c.negative_keys for c in cells], [c.negative_counts for c in cells]
        )
        return cls(
            mapping,
            sum(c.count for c in cells),
            sum(c.total for c in cells),
            min(c.minimum for c in cells),
            max(c.maximum for c in cells),
            sum(c.zero_count for c in cells),
            *positive,
            *negative,
        )

    def quantile(self, q: float) -> float:
        """The value at quantile ``q`` in [0, 1], within the mapping's relative accuracy."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self.count <= 0:
            return math.nan
        rank = q * (self.count - 1)
        values = np.concatenate(
            [
                [-self.mapping.value(int(k)) for k in self.negative_keys[::-1]],
                [0.0],
                [self.mapping.value(int(k)) for k in self.positive_keys],
            ]
        )
        counts = np.concatenate(
            [self.negative_counts[::-1], [self.zero_count], self.positive_counts]
        )
        index = int(np.searchsorted(np.cumsum(counts), rank, side="right"))
        value = float(values[min(index, len(values) - 1)])
        return min(max(value, self.minimum), self.maximum)

    @property
    def mean(self) -> float:
        """Sum over count (NaN when empty)."""
        return self.total / self.count if self.count else math.nan
