"""Cells: the unit of delta state, ``(key, slice, replica)`` plus per-kind columns and entries.

A :class:`KindCells` holds the cells of one kind as parallel arrays. Every kind has per-cell
``columns``; kinds whose cells hold a variable number of items also have ``entries``, flat
per-item arrays whose ``entry_cell`` names the owning cell (sorted, so a cell's entries are
contiguous):

- counter, gauge, max, min: numeric columns, no entries;
- distinct: no columns; entries ``index`` and ``rank`` (the non-zero HLL registers);
- distribution: columns ``sequence count total minimum maximum zero_count``; entries
  ``negative bucket count`` (the log buckets);
- set: a ``cell`` column of :class:`OrSetCell` objects (exact sets are small and irregular).

Replica-less kinds (``distinct``, ``set``) use replica index -1. This module knows each kind's
join, so deltas can be joined and de-duplicated without a store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from crdtstream.window.kinds.dense import DENSE_KINDS, Columns

__all__ = [
    "DISTRIBUTION_COLUMNS",
    "KINDS",
    "REPLICA_LESS_KINDS",
    "KindCells",
    "join_columns",
    "object_array",
]

KINDS = ("counter", "gauge", "set", "distinct", "distribution", "max", "min")
"""Every kind a key can have."""

REPLICA_LESS_KINDS = frozenset({"set", "distinct"})
DISTRIBUTION_COLUMNS = ("sequence", "count", "total", "minimum", "maximum", "zero_count")

Int64Array = npt.NDArray[np.int64]
_EMPTY = np.zeros(0, dtype=np.int64)


def object_array(items: Sequence[Any]) -> npt.NDArray[np.object_]:
    """A one-dimensional object array holding ``items`` as they are."""
    array = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):
        array[index] = item
    return array


def join_columns(kind: str, left: Columns, right: Columns) -> Columns:
    """The lattice join of two equally long sets of entry-less cells, element by element."""
    if kind in DENSE_KINDS:
        return DENSE_KINDS[kind].join(left, right)
    joined = [a.joined(b) for a, b in zip(left["cell"], right["cell"], strict=True)]
    return {"cell": object_array(joined)}


@dataclass(slots=True)
class KindCells:
    """Cells of one kind: key and replica are indices into the owning delta's name lists."""

    key: Int64Array
    slice_start: Int64Array
    replica: Int64Array
    columns: Columns
    entries: Columns = field(default_factory=dict)
    entry_cell: Int64Array = field(default_factory=lambda: _EMPTY)

    def __len__(self) -> int:
        return len(self.key)

    def reindexed(self, key: Int64Array, replica: Int64Array) -> KindCells:
        """The same cells with other key and replica indices (columns and entries shared)."""
        return KindCells(
            key, self.slice_start, replica, self.columns, self.entries, self.entry_cell
        )

    def take(self, index: Int64Array | npt.NDArray[np.bool_]) -> KindCells:
        """The cells selected by an index (distinct positions) or mask array, with entries."""
        chosen = np.flatnonzero(index) if index.dtype == np.bool_ else index
        cells = KindCells(
            self.key[chosen],
            self.slice_start[chosen],
            self.replica[chosen],
            {name: column[chosen] for name, column in self.columns.items()},
        )
        if self.entries:
            position = np.full(len(self), -1, dtype=np.int64)
            position[chosen] = np.arange(len(chosen))
            owner = position[self.entry_cell]
            kept = np.flatnonzero(owner >= 0)
            kept = kept[np.argsort(owner[kept], kind="stable")]
            cells.entries = {name: column[kept] for name, column in self.entries.items()}
            cells.entry_cell = owner[kept]
        return cells

    @staticmethod
    def concatenate(parts: Sequence[KindCells]) -> KindCells:
        """All cells of ``parts`` in order (duplicates kept)."""
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
        cells = KindCells(
            np.concatenate([p.key for p in parts]),
            np.concatenate([p.slice_start for p in parts]),
            np.concatenate([p.replica for p in parts]),
            {name: np.concatenate([p.columns[name] for p in parts]) for name in parts[0].columns},
        )
        if parts[0].entries:
            names = parts[0].entries
            cells.entries = {n: np.concatenate([p.entries[n] for p in parts]) for n in names}
            cells.entry_cell = np.concatenate(
                [p.entry_cell + offset for p, offset in zip(parts, offsets, strict=True)]
            )
        return cells

    def deduplicated(self, kind: str) -> KindCells:
        """One cell per (key, slice, replica): duplicates joined, sorted by that triple."""
        ordered = self.take(np.lexsort((self.replica, self.slice_start, self.key)))
        if len(ordered) < 2:
            return ordered
        starts = np.ones(len(ordered), dtype=np.bool_)
        starts[1:] = (
            (ordered.key[1:] != ordered.key[:-1])
            | (ordered.slice_start[1:] != ordered.slice_start[:-1])
            | (ordered.replica[1:] != ordered.replica[:-1])
        )
        if starts.all():
            return ordered
        group = np.cumsum(starts) - 1
        if kind == "distribution":
            return ordered._latest_per_group(group)
        if kind == "distinct":
            return ordered._registers_per_group(group, np.flatnonzero(starts))
        return ordered._joined_per_group(kind, group, np.flatnonzero(starts))

    def _latest_per_group(self, group: Int64Array) -> KindCells:
        # A replica's later distribution state contains its earlier ones: keep the latest.
        columns = self.columns
        order = np.lexsort((columns["total"], columns["count"], columns["sequence"], group))
        last = np.ones(len(order), dtype=np.bool_)
        last[:-1] = group[order][1:] != group[order][:-1]
        return self.take(order[last])

    def _registers_per_group(self, group: Int64Array, first: Int64Array) -> KindCells:
        result = self.take(first)
        owner = group[self.entry_cell]
        index, rank = self.entries["index"], self.entries["rank"]
        order = np.lexsort((rank, index, owner))
        owner, index, rank = owner[order], index[order], rank[order]
        last = np.ones(len(order), dtype=np.bool_)
        last[:-1] = (owner[1:] != owner[:-1]) | (index[1:] != index[:-1])
        result.entries = {"index": index[last], "rank": rank[last]}
        result.entry_cell = owner[last]
        return result

    def _joined_per_group(self, kind: str, group: Int64Array, first: Int64Array) -> KindCells:
        rank = np.arange(len(self)) - first[group]
        result = self.take(first)
        # Each pass joins the k-th duplicate of every group into its first; deltas rarely hold
        # more than a few copies of a cell, so the passes are few.
        for k in range(1, int(rank.max()) + 1):
            chosen = np.flatnonzero(rank == k)
            targets = group[chosen]
            current = {name: column[targets] for name, column in result.columns.items()}
            incoming = {name: column[chosen] for name, column in self.columns.items()}
            for name, column in join_columns(kind, current, incoming).items():
                result.columns[name][targets] = column
        return result

    def to_wire(self) -> list[Any]:
        """The cells as msgpack-able values."""
        columns: dict[str, Any] = dict(self.columns)
        if "cell" in columns:
            columns["cell"] = [cell.to_wire() for cell in self.columns["cell"]]
        return [self.key, self.slice_start, self.replica, columns, self.entries, self.entry_cell]
