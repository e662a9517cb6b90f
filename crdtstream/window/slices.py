"""The state of one slice: every kind's table or cells, addressed by kind-local key ids.

Dense kinds live in :class:`DenseTable` matrices (replica rows x keys), ``distinct`` in a
:class:`RegisterTable`, ``distribution`` cells per (key, replica row) and ``set`` cells per key.
Every change stamps the touched cells with the store version passed in, which is what
``delta_since`` reads.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from crdtstream.crdt.mapping import LogMapping
from crdtstream.window.cells import KindCells, object_array
from crdtstream.window.kinds.dense import DENSE_KINDS, DenseTable
from crdtstream.window.kinds.distinct import RegisterTable
from crdtstream.window.kinds.distribution_table import DistributionTable
from crdtstream.window.kinds.orset import OrSetCell

__all__ = ["SliceState"]


class SliceState:
    """All kinds' state of one slice."""

    def __init__(self, precision: int, mapping: LogMapping) -> None:
        self.dense: dict[str, DenseTable] = {}
        self.registers = RegisterTable(precision)
        self.distributions = DistributionTable(mapping)
        self.sets: dict[int, OrSetCell] = {}
        self.mapping = mapping
        # Per kind, at least the newest version stamped on any of its cells here: lets
        # ``changed_since`` skip, in O(1), a kind this slice has not changed since (most slices
        # are old, and every gossip round and quorum write asks each of them).
        self.latest: dict[str, int] = {}

    def note_change(self, kind: str, version: int) -> None:
        """Record that cells of ``kind`` here were stamped with ``version``; every writer of
        cells calls it (the store after a batch or a removal, :meth:`merge` itself)."""
        if version > self.latest.get(kind, 0):
            self.latest[kind] = version

    def table(self, kind: str, replicas: int, keys: int) -> DenseTable:
        """The dense table of ``kind``, grown to at least ``replicas`` x ``keys``."""
        table = self.dense.get(kind)
        if table is None:
            table = self.dense[kind] = DenseTable(DENSE_KINDS[kind])
        table.ensure(replicas, keys)
        return table

    def set_cell(self, key: int) -> OrSetCell:
        """The set cell of ``key`` (created empty)."""
        cell = self.sets.get(key)
        if cell is None:
            cell = self.sets[key] = OrSetCell()
        return cell

    def changed_since(
        self,
        kind: str,
        version: int,
        start_ms: int,
        candidates: npt.NDArray[np.int64] | None = None,
    ) -> KindCells:
        """Cells of ``kind`` changed after ``version``, keyed by kind-local id and replica row.

        ``candidates`` (sorted distinct key ids, a superset of the keys changed after
        ``version``, as a :class:`~crdtstream.window.journal.ChangeJournal` names them) limits
        the look to those keys, so the cost follows them rather than the slice's size.
        """
        if self.latest.get(kind, 0) <= version:
            empty = np.zeros(0, dtype=np.int64)
            return KindCells(empty, empty, empty, {})
        if kind == "distribution":
            cells = self.distributions.changed_since(version, candidates)
        elif kind == "distinct":
            keys, entries, owner = self.registers.changed_since(version, candidates)
            cells = KindCells(keys, keys, np.full(len(keys), -1, np.int64), {}, entries, owner)
        elif kind == "set":
            cells = self._sets_changed_since(version, candidates)
        else:
            table = self.dense.get(kind)
            if table is None:
                empty = np.zeros(0, dtype=np.int64)
                return KindCells(empty, empty, empty, DENSE_KINDS[kind].empty(0))
            rows, keys, columns = table.changed_since(version, candidates)
            cells = KindCells(keys, keys, rows, columns)
        cells.slice_start = np.full(len(cells), start_ms, dtype=np.int64)
        return cells

    def _sets_changed_since(
        self, version: int, candidates: npt.NDArray[np.int64] | None
    ) -> KindCells:
        if candidates is None:
            set_keys = [k for k, c in self.sets.items() if c.changed_version > version]
        else:
            sets = self.sets
            set_keys = [
                k for k in candidates.tolist() if k in sets and sets[k].changed_version > version
            ]
        keys = np.asarray(set_keys, dtype=np.int64)
        copies = object_array([self.sets[k].copy() for k in set_keys])
        return KindCells(keys, keys, np.full(len(keys), -1, np.int64), {"cell": copies})

    def merge(
        self,
        kind: str,
        keys: npt.NDArray[np.int64],
        rows: npt.NDArray[np.int64],
        incoming: KindCells,
        shape: tuple[int, int],
        version: int,
    ) -> npt.NDArray[np.bool_]:
        """Join distinct incoming cells of ``kind``; return which inflated the state."""
        self.note_change(kind, version)
        if kind in DENSE_KINDS:
            return self.table(kind, *shape).merge(rows, keys, incoming.columns, version)
        if kind == "distinct":
            return self.registers.merge(keys, incoming.entries, incoming.entry_cell, version)
        if kind == "distribution":
            return self.distributions.merge(keys, rows, incoming, shape[0], version)
        inflated = np.zeros(len(keys), dtype=np.bool_)
        cells = incoming.columns["cell"]
        for index, (key, cell) in enumerate(zip(keys.tolist(), cells, strict=True)):
            local_set = self.set_cell(key)
            joined_set = local_set.joined(cell)
            if joined_set != local_set:
                joined_set.changed_version = version
                self.sets[key] = joined_set
                inflated[index] = True
        return inflated

    def nbytes(self) -> int:
        """Approximate bytes held (numpy buffers; cell objects by their arrays and entries)."""
        total = sum(t.nbytes() for t in self.dense.values()) + self.registers.nbytes()
        total += self.distributions.nbytes()
        for set_cell in self.sets.values():
            total += 64 + 48 * len(set_cell.entries)
        return total
