"""The ``distinct`` kind: HyperLogLog registers, one uint8 row per key per slice.

The registers are those of :class:`~crdtstream.crdt.hyperloglog.HyperLogLog` (same hash, same
index/rank split, same estimator), so a key agrees with a HyperLogLog fed the same items. Their
join is the register-wise maximum, which needs no per-replica slots: a cell is ``(key, slice)``
and travels with replica index -1. Rows are allocated only for keys that have distinct data in the
slice, since a row is ``2**precision`` bytes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from crdtstream.crdt.hyperloglog import hll_index_rank

__all__ = ["RegisterTable"]


class RegisterTable:
    """HLL register rows of one slice, addressed by the kind-local key id."""

    def __init__(self, precision: int) -> None:
        self.precision = precision
        self.width = 1 << precision
        self.row_of_key = np.full(0, -1, dtype=np.int64)
        self.registers = np.zeros((0, self.width), dtype=np.uint8)
        self.version = np.zeros(0, dtype=np.int64)
        self.row_count = 0

    def _rows_for(self, keys: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Rows of distinct ``keys``, allocating rows for keys that have none yet."""
        if len(keys) and int(keys.max()) >= len(self.row_of_key):
            grown = np.full(max(int(keys.max()) + 1, 2 * len(self.row_of_key)), -1, np.int64)
            grown[: len(self.row_of_key)] = self.row_of_key
            self.row_of_key = grown
        rows = self.row_of_key[keys]
        missing = rows < 0
        if missing.any():
            new_rows = self.row_count + np.arange(int(missing.sum()), dtype=np.int64)
            self.row_of_key[keys[missing]] = new_rows
            self.row_count += len(new_rows)
            self._grow(self.row_count)
            rows = self.row_of_key[keys]
        return rows

    def _grow(self, rows: int) -> None:
        if rows <= len(self.version):
            return
        capacity = max(rows, 2 * len(self.version), 4)
        registers = np.zeros((capacity, self.width), dtype=np.uint8)
        registers[: len(self.registers)] = self.registers
        version = np.zeros(capacity, dtype=np.int64)
        version[: len(self.version)] = self.version
        self.registers, self.version = registers, version

    def add(self, keys: npt.NDArray[np.int64], hashes: npt.NDArray[np.uint64], version: int) -> int:
        """Add hashed items per key; stamp changed rows with ``version``; return how many."""
        unique_keys, inverse = np.unique(keys, return_inverse=True)
        event_rows = self._rows_for(unique_keys)[inverse]
        indexes, ranks = hll_index_rank(hashes, self.precision)
        # Only events that raise their register change anything; gathering the old registers
        # per event is far cheaper than copying whole rows to compare afterwards.
        raising = ranks > self.registers[event_rows, indexes]
        np.maximum.at(self.registers, (event_rows[raising], indexes[raising]), ranks[raising])
        changed_rows = np.unique(event_rows[raising])
        self.version[changed_rows] = version
        return len(changed_rows)

    def merge(
        self, keys: npt.NDArray[np.int64], incoming: npt.NDArray[np.uint8], version: int
    ) -> npt.NDArray[np.bool_]:
        """Join distinct keys' incoming rows; return which inflated the state."""
        rows = self._rows_for(keys)
        local = self.registers[rows]
        inflated: npt.NDArray[np.bool_] = np.asarray((incoming > local).any(axis=1))
        self.registers[rows[inflated]] = np.maximum(local[inflated], incoming[inflated])
        self.version[rows[inflated]] = version
        return inflated

    def row(self, key: int) -> npt.NDArray[np.uint8] | None:
        """The registers of ``key`` when it has data in this slice."""
        if key >= len(self.row_of_key) or self.row_of_key[key] < 0:
            return None
        row = int(self.row_of_key[key])
        return self.registers[row] if self.version[row] > 0 else None

    def keys_present(self) -> npt.NDArray[np.int64]:
        """Kind-local ids of the keys with data in this slice."""
        keys = np.flatnonzero(self.row_of_key >= 0)
        return keys[self.version[self.row_of_key[keys]] > 0].astype(np.int64)

    def changed_since(self, version: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
        """Keys and register rows changed after ``version``."""
        keys = self.keys_present()
        rows = self.row_of_key[keys]
        changed = self.version[rows] > version
        return keys[changed], self.registers[rows[changed]]

    def nbytes(self) -> int:
        """Bytes of numpy state held."""
        return int(self.registers.nbytes + self.version.nbytes + self.row_of_key.nbytes)
