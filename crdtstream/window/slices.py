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
from crdtstream.window.cells import object_array
from crdtstream.window.kinds.dense import DENSE_KINDS, Columns, DenseTable
from crdtstream.window.kinds.distinct import RegisterTable
from crdtstream.window.kinds.distribution_table import DistributionTable
from crdtstream.window.kinds.orset import OrSetCell

__all__ = ["SliceState"]

Changed = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], Columns]
"""Kind-local keys, replica rows (-1 for replica-less kinds) and columns of changed cells."""


class SliceState:
    """All kinds' state of one slice."""

    def __init__(self, precision: int, mapping: LogMapping) -> None:
        self.dense: dict[str, DenseTable] = {}
        self.registers = RegisterTable(precision)
        self.distributions = DistributionTable(mapping)
        self.sets: dict[int, OrSetCell] = {}
        self.mapping = mapping

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

    def changed_since(self, kind: str, version: int) -> Changed:
        """Cells of ``kind`` changed after ``version``."""
        if kind in DENSE_KINDS:
            table = self.dense.get(kind)
            if table is None:
                return _no_cells(kind)
            rows, keys, columns = table.changed_since(version)
            return keys, rows, columns
        if kind == "distinct":
            keys, registers = self.registers.changed_since(version)
            return keys, np.full(len(keys), -1, np.int64), {"registers": registers}
        if kind == "distribution":
            return self.distributions.changed_since(version)
        set_keys = [k for k, c in self.sets.items() if c.changed_version > version]
        keys = np.asarray(set_keys, dtype=np.int64)
        cells = [self.sets[k].copy() for k in set_keys]
        return keys, np.full(len(keys), -1, np.int64), {"cell": object_array(cells)}

    def merge(
        self,
        kind: str,
        keys: npt.NDArray[np.int64],
        rows: npt.NDArray[np.int64],
        columns: Columns,
        shape: tuple[int, int],
        version: int,
    ) -> npt.NDArray[np.bool_]:
        """Join distinct incoming cells of ``kind``; return which inflated the state."""
        if kind in DENSE_KINDS:
            return self.table(kind, *shape).merge(rows, keys, columns, version)
        if kind == "distinct":
            return self.registers.merge(keys, columns["registers"], version)
        if kind == "distribution":
            return self.distributions.merge(keys, rows, columns["cell"], shape[0], version)
        inflated = np.zeros(len(keys), dtype=np.bool_)
        for index, (key, incoming) in enumerate(zip(keys.tolist(), columns["cell"], strict=True)):
            local_set = self.set_cell(key)
            joined_set = local_set.joined(incoming)
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


def _no_cells(kind: str) -> Changed:
    empty = np.zeros(0, dtype=np.int64)
    return empty, empty, DENSE_KINDS[kind].empty(0)
