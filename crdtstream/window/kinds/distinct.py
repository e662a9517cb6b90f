"""The ``distinct`` kind: HyperLogLog registers per key per slice, stored sparsely.

The registers are those of :class:`~crdtstream.crdt.hyperloglog.HyperLogLog` (same hash, same
index/rank split, same estimator), so a key agrees with a HyperLogLog fed the same items. Their
join is the register-wise maximum, which needs no per-replica slots: a cell is ``(key, slice)``
and travels with replica index -1.

A dense row is ``2**precision`` bytes per key per slice, mostly zeros for the small sets of one
window (a statsd ``|s`` key sees few members in ten seconds). So a slice keeps only its non-zero
registers, as ``code = key * 2**precision + index`` (sorted) with their ranks; rows are built
densely only to estimate or to ship.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from crdtstream.crdt.hyperloglog import hll_index_rank
from crdtstream.window.kinds.ranges import entries_of

__all__ = ["RegisterTable"]

Int64Array = npt.NDArray[np.int64]
Uint8Array = npt.NDArray[np.uint8]
BoolArray = npt.NDArray[np.bool_]


class RegisterTable:
    """Non-zero HLL registers of one slice, addressed by the kind-local key id."""

    def __init__(self, precision: int) -> None:
        self.precision = precision
        self.width = 1 << precision
        self.codes = np.zeros(0, dtype=np.int64)
        self.ranks = np.zeros(0, dtype=np.uint8)
        self.version = np.zeros(0, dtype=np.int64)

    def _raise(self, codes: Int64Array, ranks: Uint8Array) -> tuple[Int64Array, BoolArray]:
        """Fold registers in by maximum. Returns the distinct incoming codes (sorted) and which
        of them raised a register.

        Only the incoming registers are sorted (their largest rank per code kept); they join
        the held ones by binary search, in-place raises and one insertion of the new codes, so
        the cost grows with the batch, not with the registers already held.
        """
        if len(codes) == 0:
            return codes, np.zeros(0, dtype=np.bool_)
        # Code and rank packed in one integer, so a plain sort orders by (code, rank). Codes
        # stay below 2**55 (dense key ids below 2**(55 - precision), far past any store).
        packed = np.sort((codes << 8) | ranks)
        sorted_codes, sorted_ranks = packed >> 8, (packed & 0xFF).astype(np.uint8)
        last = np.ones(len(sorted_codes), dtype=np.bool_)
        last[:-1] = sorted_codes[1:] != sorted_codes[:-1]
        group_codes, group_ranks = sorted_codes[last], sorted_ranks[last]
        held_count = len(self.codes)
        position = np.searchsorted(self.codes, group_codes)
        found = position < held_count
        found[found] = self.codes[position[found]] == group_codes[found]
        held = np.zeros(len(group_codes), dtype=np.uint8)
        held[found] = self.ranks[position[found]]
        raising = group_ranks > held
        raised = found & raising
        self.ranks[position[raised]] = group_ranks[raised]
        new = raising & ~found
        if new.any():
            self.codes = np.insert(self.codes, position[new], group_codes[new])
            self.ranks = np.insert(self.ranks, position[new], group_ranks[new])
        return group_codes, raising

    def _stamp(self, keys: Int64Array, version: int) -> None:
        if len(keys) == 0:
            return
        needed = int(keys.max()) + 1
        if needed > len(self.version):
            grown = np.zeros(max(needed, 2 * len(self.version)), dtype=np.int64)
            grown[: len(self.version)] = self.version
            self.version = grown
        self.version[keys] = version

    def add(self, keys: Int64Array, hashes: npt.NDArray[np.uint64], version: int) -> int:
        """Add hashed items per key; stamp changed keys with ``version``; return how many."""
        indexes, ranks = hll_index_rank(hashes, self.precision)
        group_codes, raising = self._raise(keys * self.width + indexes, ranks)
        # The codes are sorted, so their keys are too: distinct keys by a neighbour test.
        raised_keys = group_codes[raising] >> self.precision
        distinct = np.ones(len(raised_keys), dtype=np.bool_)
        distinct[1:] = raised_keys[1:] != raised_keys[:-1]
        changed = raised_keys[distinct]
        self._stamp(changed, version)
        return len(changed)

    def merge(
        self,
        keys: Int64Array,
        entries: dict[str, npt.NDArray[Any]],
        owner: Int64Array,
        version: int,
    ) -> npt.NDArray[np.bool_]:
        """Join distinct keys' incoming non-zero registers; return which keys inflated."""
        codes = keys[owner] * self.width + entries["index"]
        group_codes, raising = self._raise(codes, entries["rank"])
        inflated = np.zeros(len(keys), dtype=np.bool_)
        # A key inflated when any of its incoming registers' codes raised a register.
        inflated[owner[raising[np.searchsorted(group_codes, codes)]]] = True
        self._stamp(keys[inflated], version)
        return inflated

    def row(self, key: int) -> Uint8Array | None:
        """The dense registers of ``key`` when it has data in this slice."""
        if key >= len(self.version) or self.version[key] == 0:
            return None
        row: Uint8Array = self._rows(np.array([key], dtype=np.int64))[0]
        return row

    def _rows(self, keys: Int64Array) -> Uint8Array:
        rows = np.zeros((len(keys), self.width), dtype=np.uint8)
        low = np.searchsorted(self.codes, keys * self.width)
        high = np.searchsorted(self.codes, (keys + 1) * self.width)
        lengths = high - low
        cell = np.repeat(np.arange(len(keys)), lengths)
        # Positions low[i] .. high[i]-1 of every key, flattened without a Python loop.
        starts = np.repeat(low - (np.cumsum(lengths) - lengths), lengths)
        taken = np.arange(int(lengths.sum()), dtype=np.int64) + starts
        rows[cell, self.codes[taken] - keys[cell] * self.width] = self.ranks[taken]
        return rows

    def keys_present(self) -> Int64Array:
        """Kind-local ids of the keys with data in this slice."""
        return np.flatnonzero(self.version > 0).astype(np.int64)

    def changed_since(
        self, version: int, candidates: Int64Array | None = None
    ) -> tuple[Int64Array, dict[str, npt.NDArray[Any]], Int64Array]:
        """Keys changed after ``version``, their non-zero registers and each one's key position;
        with ``candidates`` (sorted distinct key ids, a superset of the changed ones) only
        those keys and their registers are looked at."""
        if candidates is None:
            keys = np.flatnonzero(self.version > version).astype(np.int64)
            owners = self.codes >> self.precision
            selected = np.isin(owners, keys)
            owner = np.searchsorted(keys, owners[selected]).astype(np.int64)
            index = self.codes[selected] & (self.width - 1)
            return keys, {"index": index, "rank": self.ranks[selected]}, owner
        candidates = candidates[candidates < len(self.version)]
        keys = candidates[self.version[candidates] > version]
        positions, owner = entries_of(self.codes, keys * self.width, (keys + 1) * self.width)
        index = self.codes[positions] & (self.width - 1)
        return keys, {"index": index, "rank": self.ranks[positions]}, owner

    def nbytes(self) -> int:
        """Bytes of numpy state held."""
        return int(self.codes.nbytes + self.ranks.nbytes + self.version.nbytes)
