"""Cells: the unit of delta state, ``(key, slice, replica)`` plus per-kind columns.

A :class:`KindCells` holds the cells of one kind as parallel arrays. Dense kinds carry named
numeric columns, ``distinct`` a ``registers`` matrix, ``set`` and ``distribution`` a ``cell``
column of objects. Replica-less kinds (``distinct``, ``set``) use replica index -1. This module
knows each kind's join, so deltas can be joined and de-duplicated without a store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from crdtstream.window.kinds.dense import DENSE_KINDS, Columns
from crdtstream.window.kinds.distribution import DistributionCell
from crdtstream.window.kinds.orset import OrSetCell

__all__ = [
    "KINDS",
    "OBJECT_KINDS",
    "REPLICA_LESS_KINDS",
    "KindCells",
    "join_columns",
    "object_array",
]

KINDS = ("counter", "gauge", "set", "distinct", "distribution", "max", "min")
"""Every kind a key can have."""

OBJECT_KINDS: dict[str, type[OrSetCell] | type[DistributionCell]] = {
    "set": OrSetCell,
    "distribution": DistributionCell,
}
REPLICA_LESS_KINDS = frozenset({"set", "distinct"})


def object_array(items: Sequence[Any]) -> npt.NDArray[np.object_]:
    """A one-dimensional object array holding ``items`` as they are."""
    array = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):
        array[index] = item
    return array


def join_columns(kind: str, left: Columns, right: Columns) -> Columns:
    """The lattice join of two equally long sets of cells of ``kind``, element by element."""
    if kind in DENSE_KINDS:
        return DENSE_KINDS[kind].join(left, right)
    if kind == "distinct":
        return {"registers": np.maximum(left["registers"], right["registers"])}
    joined = [a.joined(b) for a, b in zip(left["cell"], right["cell"], strict=True)]
    return {"cell": object_array(joined)}


@dataclass(slots=True)
class KindCells:
    """Cells of one kind: key and replica are indices into the owning delta's name lists."""

    key: npt.NDArray[np.int64]
    slice_start: npt.NDArray[np.int64]
    replica: npt.NDArray[np.int64]
    columns: Columns

    def __len__(self) -> int:
        return len(self.key)

    def take(self, index: npt.NDArray[np.int64] | npt.NDArray[np.bool_]) -> KindCells:
        """The cells selected by an index or mask array."""
        return KindCells(
            self.key[index],
            self.slice_start[index],
            self.replica[index],
            {name: column[index] for name, column in self.columns.items()},
        )

    @staticmethod
    def concatenate(parts: Sequence[KindCells]) -> KindCells:
        """All cells of ``parts`` in order (duplicates kept)."""
        return KindCells(
            np.concatenate([p.key for p in parts]),
            np.concatenate([p.slice_start for p in parts]),
            np.concatenate([p.replica for p in parts]),
            {name: np.concatenate([p.columns[name] for p in parts]) for name in parts[0].columns},
        )

    def deduplicated(self, kind: str) -> KindCells:
        """One cell per (key, slice, replica): duplicates joined, sorted by that triple."""
        order = np.lexsort((self.replica, self.slice_start, self.key))
        ordered = self.take(order)
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
        first = np.flatnonzero(starts)
        rank = np.arange(len(ordered)) - first[group]
        result = ordered.take(first)
        # Each pass joins the k-th duplicate of every group into its first; deltas rarely hold
        # more than a few copies of a cell, so the passes are few.
        for k in range(1, int(rank.max()) + 1):
            chosen = np.flatnonzero(rank == k)
            targets = group[chosen]
            current = {name: column[targets] for name, column in result.columns.items()}
            incoming = {name: column[chosen] for name, column in ordered.columns.items()}
            for name, column in join_columns(kind, current, incoming).items():
                result.columns[name][targets] = column
        return result

    def wire_columns(self, kind: str) -> dict[str, Any]:
        """Columns as msgpack-able values."""
        if kind in OBJECT_KINDS:
            return {"cell": [cell.to_wire() for cell in self.columns["cell"]]}
        return dict(self.columns)
