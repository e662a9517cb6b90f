"""Which slices and keys each store version changed: lets a small delta cost what changed.

Rules of this file: pure, no numpy work per event. Every writer of a store's cells (a batch, a
set removal, a merge) records one entry per ``(kind, slice)`` it stamped: the store version, the
kind, the slice start and the kind-local keys it may have changed (a superset is fine, ``None``
means "any key of that slice"). :meth:`ChangeJournal.since` then names, for a version ``v``, the
``(kind, slice)`` pairs and candidate keys whose cells may carry a stamp above ``v``; the caller
still filters the candidates by their stamps, so the result is exact as long as no change was
left unrecorded.

The journal is bounded: past ``entries_max`` entries or ``keys_max`` recorded keys it drops its
oldest half and raises :attr:`ChangeJournal.floor`, the version at and below which it no longer
answers (``since`` returns ``None`` and the caller walks every slice, as it would without a
journal). Entries of evicted slices stay until dropped; the caller skips slices that are gone.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np
import numpy.typing as npt

__all__ = ["WINDOW_COUNTS", "ChangeJournal", "Changes"]

Int64Array = npt.NDArray[np.int64]

Changes = dict[str, dict[int, Int64Array | None]]
"""Per kind, per slice start: sorted distinct candidate keys, or ``None`` for every key."""

WINDOW_COUNTS = "window_counts"
"""Recorded in place of a kind when a merge raised window version entries; the "keys" are
replica rows. A replica's own entries change with its own writes, which the kinds record."""


class ChangeJournal:
    """The bounded record of which ``(kind, slice, keys)`` each store version changed."""

    def __init__(self, *, entries_max: int = 4_096, keys_max: int = 1 << 16) -> None:
        if entries_max < 2 or keys_max < 2:
            raise ValueError("a journal holds at least 2 entries and 2 keys")
        self.entries_max = entries_max
        self.keys_max = keys_max
        self._whole_above = keys_max // 4
        self.floor = 0
        """Changes stamped with a version above this are all recorded."""
        self._versions: list[int] = []
        self._entries: list[tuple[str, int, Int64Array | int | None]] = []
        self._key_total = 0

    def __len__(self) -> int:
        return len(self._versions)

    def record(self, version: int, kind: str, start_ms: int, keys: Int64Array | int | None) -> None:
        """Note that ``version`` stamped cells of ``kind`` in the slice at ``start_ms``, all of
        them among ``keys`` (one key id, an array that is not written to afterwards, or
        ``None`` for the whole slice). Versions must not decrease from one call to the next."""
        size = 1 if keys is None or isinstance(keys, int) else len(keys)
        if size > self._whole_above:
            keys, size = None, 1  # a big batch: checking every key of the slice costs less
        self._versions.append(version)
        self._entries.append((kind, start_ms, keys))
        self._key_total += size
        if self._key_total > self.keys_max or len(self._versions) > self.entries_max:
            self._drop_oldest_half()

    def since(self, version: int, entries_limit: int) -> Changes | None:
        """The ``(kind, slice)`` pairs and candidate keys changed after ``version``; ``None``
        when ``version`` is below :attr:`floor` (the journal no longer knows) or more than
        ``entries_limit`` entries follow it (a walk over every slice is then the cheaper way)."""
        if version < self.floor:
            return None
        first = bisect_right(self._versions, version)
        if len(self._versions) - first > entries_limit:
            return None
        # Per kind and slice: the single key ids and the key arrays, or None for every key.
        gathered: dict[str, dict[int, tuple[list[int], list[Int64Array]] | None]] = {}
        for kind, start, keys in self._entries[first:]:
            slices = gathered.setdefault(kind, {})
            if keys is None:
                slices[start] = None
                continue
            known = slices.setdefault(start, ([], []))
            if known is None:
                continue
            if isinstance(keys, int):
                known[0].append(keys)
            else:
                known[1].append(keys)
        return {
            kind: {start: _candidates(keys) for start, keys in slices.items()}
            for kind, slices in gathered.items()
        }

    def _drop_oldest_half(self) -> None:
        """Forget the oldest entries (at least half of them, and enough to halve the keys)."""
        cut = max(len(self._versions) // 2, 1)
        kept = self._key_total - sum(_size(keys) for _, _, keys in self._entries[:cut])
        while cut < len(self._versions) and kept > self.keys_max // 2:
            kept -= _size(self._entries[cut][2])
            cut += 1
        # Entries left with the newest dropped version are harmless (the floor excludes them).
        self.floor = max(self.floor, self._versions[cut - 1])
        del self._versions[:cut], self._entries[:cut]
        self._key_total = kept


def _size(keys: Int64Array | int | None) -> int:
    return 1 if keys is None or isinstance(keys, int) else len(keys)


def _candidates(keys: tuple[list[int], list[Int64Array]] | None) -> Int64Array | None:
    if keys is None:
        return None
    ids, arrays = keys
    if not arrays:
        return np.unique(np.array(ids, dtype=np.int64))
    return np.unique(np.concatenate([np.array(ids, dtype=np.int64), *arrays])).astype(np.int64)
