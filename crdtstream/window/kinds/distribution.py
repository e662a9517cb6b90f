"""The ``distribution`` kind: per-replica logarithmic buckets plus count, sum, min and max.

Buckets use :class:`~crdtstream.crdt.mapping.LogMapping`, the mapping of
:class:`~crdtstream.crdt.distribution.Distribution`, so a value lands in the same bucket in both.
Positive values go to ``positive`` buckets, negative values to ``negative`` buckets by magnitude,
zero to ``zero_count``. Counts are floats because a statsd sample rate weights them (``@0.1``
counts 10).

A replica's history is linear, so of two states of the same ``(key, slice, replica)`` cell the
one with the higher ``sequence`` (the writer's store version) contains the other; the join keeps
it (see :mod:`.distribution_table` and :mod:`crdtstream.window.cells`). Sums of negative values
are not monotone, which is why the join picks a whole state rather than maxima field by field.
The store keeps cells columnar; :class:`DistributionCell` is the per-cell view that reads use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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
