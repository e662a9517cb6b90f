"""Columnar storage of the ``distribution`` kind in one slice.

Per (replica row, key) the summary statistics live in a :class:`DenseTable` (sequence, count,
total, minimum, maximum, zero count); the buckets of every cell live in one sorted int64 array of
packed codes ``((cell * 2 + negative) << 22) | (bucket + 2**21)`` with ``cell = key * ROW_LIMIT +
row``, and their counts. A batch is reduced by one sort of its own buckets and merged into the
slice's sorted codes by binary search and insertion, never a Python step per event or per key.
Cells leave and enter as :class:`DistributionCell` objects only at the delta boundary.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from crdtstream.crdt.mapping import LogMapping
from crdtstream.window.cells import KindCells
from crdtstream.window.kinds.dense import DenseKind, DenseTable
from crdtstream.window.kinds.distribution import DistributionCell
from crdtstream.window.kinds.ranges import entries_of

__all__ = ["ROW_LIMIT", "DistributionTable"]

ROW_LIMIT = 1 << 12
"""Replica rows a slice can address (cell codes pack the row into the low bits); with the 23 bits
of sign and bucket this leaves 28 bits of kind-local key id, far beyond any key catalogue."""

STATS = DenseKind(
    "distribution",
    (
        ("sequence", "i8", 0),
        ("count", "f8", 0.0),
        ("total", "f8", 0.0),
        ("minimum", "f8", math.inf),
        ("maximum", "f8", -math.inf),
        ("zero_count", "f8", 0.0),
    ),
)

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
_BUCKET_BITS = 22
_BUCKET_OFFSET = 1 << (_BUCKET_BITS - 1)
_BUCKET_MASK = (1 << _BUCKET_BITS) - 1
_CELL_SHIFT = _BUCKET_BITS + 1


class DistributionTable:
    """Distribution cells of one slice (see the module docstring)."""

    def __init__(self, mapping: LogMapping) -> None:
        if math.ceil(800.0 / math.log(mapping.gamma)) >= _BUCKET_OFFSET:
            raise ValueError("relative accuracy too fine for the packed bucket codes")
        self.mapping = mapping
        self.stats = DenseTable(STATS)
        self.codes = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.float64)

    def add(
        self,
        keys: Int64Array,
        values: Float64Array,
        weights: Float64Array,
        replica_count: int,
        version: int,
    ) -> None:
        """Fold weighted values into this replica's (row 0) cells of ``keys``."""
        unique, inverse = np.unique(keys, return_inverse=True)
        count = len(unique)
        self.stats.ensure(replica_count, int(unique[-1]) + 1)
        zero = values == 0
        columns = self.stats.columns
        columns["count"][0, unique] += np.bincount(inverse, weights, count)
        columns["total"][0, unique] += np.bincount(inverse, weights * values, count)
        columns["zero_count"][0, unique] += np.bincount(inverse[zero], weights[zero], count)
        minimum = np.full(count, math.inf)
        np.minimum.at(minimum, inverse, values)
        maximum = np.full(count, -math.inf)
        np.maximum.at(maximum, inverse, values)
        columns["minimum"][0, unique] = np.fmin(columns["minimum"][0, unique], minimum)
        columns["maximum"][0, unique] = np.fmax(columns["maximum"][0, unique], maximum)
        columns["sequence"][0, unique] = version
        self.stats.version[0, unique] = version
        nonzero = ~zero
        buckets = self.mapping.keys(np.abs(values[nonzero]))
        codes = _pack(keys[nonzero] * ROW_LIMIT, values[nonzero] < 0, buckets)
        self._add_buckets(codes, weights[nonzero])

    def _add_buckets(self, codes: Int64Array, counts: Float64Array) -> None:
        new, inverse = np.unique(codes, return_inverse=True)
        sums = np.bincount(inverse, counts, len(new))
        position = np.searchsorted(self.codes, new)
        hit = position < len(self.codes)
        hit[hit] = self.codes[position[hit]] == new[hit]
        self.counts[position[hit]] += sums[hit]
        miss = ~hit
        self.codes = np.insert(self.codes, position[miss], new[miss])
        self.counts = np.insert(self.counts, position[miss], sums[miss])

    def has(self, key: int) -> bool:
        """True when ``key`` has a cell in this slice."""
        versions = self.stats.version
        return key < versions.shape[1] and bool(versions[:, key].any())

    def keys_present(self) -> Int64Array:
        """Kind-local ids of the keys with a cell."""
        return np.flatnonzero(self.stats.version.any(axis=0)).astype(np.int64)

    def cell_at(self, key: int, row: int) -> DistributionCell:
        """The cell of ``key`` written by replica ``row``, as an object."""
        cell = key * ROW_LIMIT + row
        low, high = np.searchsorted(self.codes, [cell << _CELL_SHIFT, (cell + 1) << _CELL_SHIFT])
        codes, count = self.codes[low:high], self.counts[low:high]
        negative = ((codes >> _BUCKET_BITS) & 1).astype(np.bool_)
        bucket = (codes & _BUCKET_MASK) - _BUCKET_OFFSET
        stats = {name: column[row, key] for name, column in self.stats.columns.items()}
        return DistributionCell(
            int(stats["sequence"]),
            float(stats["count"]),
            float(stats["total"]),
            float(stats["minimum"]),
            float(stats["maximum"]),
            float(stats["zero_count"]),
            bucket[~negative].copy(),
            count[~negative].copy(),
            bucket[negative].copy(),
            count[negative].copy(),
        )

    def cells_of(self, key: int) -> list[DistributionCell]:
        """Every replica's cell of ``key``."""
        if not self.has(key):
            return []
        rows = np.flatnonzero(self.stats.version[:, key] > 0)
        return [self.cell_at(key, int(row)) for row in rows]

    def changed_since(self, version: int, candidates: Int64Array | None = None) -> KindCells:
        """Cells changed after ``version`` (slice start left 0 for the caller to fill); with
        ``candidates`` (sorted distinct key ids, a superset of the changed ones) only those
        keys' cells and buckets are looked at."""
        versions = self.stats.version
        if candidates is None:
            rows, keys = np.nonzero(versions > version)
        else:
            candidates = candidates[candidates < versions.shape[1]]
            rows, chosen = np.nonzero(versions[:, candidates] > version)
            keys = candidates[chosen]
        cells = keys.astype(np.int64) * ROW_LIMIT + rows
        order = np.argsort(cells)
        cells, keys, rows = cells[order], keys[order].astype(np.int64), rows[order].astype(np.int64)
        if candidates is None:
            owners = self.codes >> _CELL_SHIFT
            selected = np.flatnonzero(np.isin(owners, cells))
            owner = np.searchsorted(cells, owners[selected]).astype(np.int64)
        else:
            selected, owner = entries_of(
                self.codes, cells << _CELL_SHIFT, (cells + 1) << _CELL_SHIFT
            )
        codes = self.codes[selected]
        entries = {
            "negative": ((codes >> _BUCKET_BITS) & 1).astype(np.bool_),
            "bucket": (codes & _BUCKET_MASK) - _BUCKET_OFFSET,
            "count": self.counts[selected],
        }
        return KindCells(
            keys,
            np.zeros(len(keys), dtype=np.int64),
            rows,
            {name: column[rows, keys] for name, column in self.stats.columns.items()},
            entries,
            owner,
        )

    def merge(
        self,
        keys: Int64Array,
        rows: Int64Array,
        incoming: KindCells,
        replica_count: int,
        version: int,
    ) -> BoolArray:
        """Join incoming cells (the later state of a replica wins); return which inflated."""
        if replica_count > ROW_LIMIT:
            raise ValueError(f"a slice addresses at most {ROW_LIMIT} replicas")
        inflated = np.zeros(len(keys), dtype=np.bool_)
        if len(keys) == 0:
            return inflated
        self.stats.ensure(replica_count, int(keys.max()) + 1)
        columns = self.stats.columns
        # The later state of a replica wins: compare (sequence, count, total) lexicographically.
        undecided = np.ones(len(keys), dtype=np.bool_)
        for name in ("sequence", "count", "total"):
            local = columns[name][rows, keys]
            inflated |= undecided & (incoming.columns[name] > local)
            undecided &= incoming.columns[name] == local
        if not inflated.any():
            return inflated
        chosen_keys, chosen_rows = keys[inflated], rows[inflated]
        for name, column in columns.items():
            column[chosen_rows, chosen_keys] = incoming.columns[name][inflated]
        self.stats.version[chosen_rows, chosen_keys] = version
        cells = keys * ROW_LIMIT + rows
        keep = ~np.isin(self.codes >> _CELL_SHIFT, cells[inflated])
        self.codes, self.counts = self.codes[keep], self.counts[keep]
        owner = incoming.entry_cell
        taken = inflated[owner]
        entries = incoming.entries
        codes = _pack(cells[owner[taken]], entries["negative"][taken], entries["bucket"][taken])
        self._add_buckets(codes, entries["count"][taken])
        return inflated

    def nbytes(self) -> int:
        """Bytes of numpy state held."""
        return self.stats.nbytes() + self.codes.nbytes + self.counts.nbytes


def _pack(cells: Int64Array, negative: BoolArray, buckets: Int64Array) -> Int64Array:
    """Bucket codes sorted as (cell, sign, bucket); see the module docstring."""
    signed = cells * 2 + negative.astype(np.int64)
    packed: Int64Array = (signed << _BUCKET_BITS) | (buckets + _BUCKET_OFFSET)
    return packed
