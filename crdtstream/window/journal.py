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

__all__ = ["ChangeJournal", "Changes"]

Int64Array = npt.NDArray[np.int64]

Changes = dict[str, dict[int, Int64Array | None]]
"""Per kind, per slice start: sorted distinct candidate keys, or ``None`` for every key."""


class ChangeJournal:
    """The bounded record of which ``(kind, slice, keys)`` each store version changed."""

    def __init__(self, *, entries_max: int = 4_096, keys_max: int = 1 << 16) -> None:
        if entries_max < 2 or keys_max < 2:
            raise ValueError("a journal holds at least 2 entries and 2 keys")
        self.entries_max = entries_max
        self.keys_max = keys_max
        self.floor = 0
        """Changes stamped with a version above this are all recorded."""
        self._versions: list[int] = []
        self._kinds: list[str] = []
        self._starts: list[int] = []
        self._keys: list[Int64Array | int | None] = []
        self._key_total = 0

    def __len__(self) -> int:
        return len(self._versions)

    def record(self, version: int, kind: str, start_ms: int, keys: Int64Array | int | None) -> None:
        """Note that ``version`` stamped cells of ``kind`` in the slice at ``start_ms``, all of
        them among ``keys`` (one key id, an array that is not written to afterwards, or
        ``None`` for the whole slice). Versions must not decrease from one call to the next."""
        if keys is not None and not isinstance(keys, int) and len(keys) > self.keys_max // 4:
            keys = None  # a big batch: checking the slice's every key is cheaper than these
        self._versions.append(version)
        self._kinds.append(kind)
        self._starts.append(start_ms)
        self._keys.append(keys)
        self._key_total += 1 if keys is None or isinstance(keys, int) else len(keys)
        if len(self._versions) > self.entries_max or self._key_total > self.keys_max:
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
        gathered: dict[str, dict[int, list[Int64Array | int] | None]] = {}
        for kind, start, keys in zip(
            self._kinds[first:], self._starts[first:], self._keys[first:], strict=True
        ):
            slices = gathered.setdefault(kind, {})
            if keys is None:
                slices[start] = None
                continue
            known = slices.setdefault(start, [])
            if known is not None:
                known.append(keys)
        return {
            kind: {start: _candidates(keys) for start, keys in slices.items()}
            for kind, slices in gathered.items()
        }

    def _drop_oldest_half(self) -> None:
        """Forget the oldest entries (at least half of them, whole versions at a time)."""
        cut = len(self._versions) // 2
        keys_kept = self._key_total
        for keys in self._keys[:cut]:
            keys_kept -= 1 if keys is None or isinstance(keys, int) else len(keys)
        while cut < len(self._versions) and keys_kept > self.keys_max // 2:
            keys = self._keys[cut]
            keys_kept -= 1 if keys is None or isinstance(keys, int) else len(keys)
            cut += 1
        cut = max(cut, 1)
        # Entries left with the newest dropped version are harmless (the floor excludes them).
        self.floor = max(self.floor, self._versions[cut - 1])
        del self._versions[:cut], self._kinds[:cut], self._starts[:cut], self._keys[:cut]
        self._key_total = keys_kept


def _candidates(keys: list[Int64Array | int] | None) -> Int64Array | None:
    if keys is None:
        return None
    if len(keys) == 1 and isinstance(keys[0], int):
        return np.array(keys, dtype=np.int64)
    arrays = [np.array([k], dtype=np.int64) if isinstance(k, int) else k for k in keys]
    return np.unique(np.concatenate(arrays)).astype(np.int64, copy=False)
