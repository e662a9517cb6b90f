"""The Raft log as the core sees it: stable storage plus an unstable tail not yet persisted.

Indices below ``Unstable.offset`` are read from :class:`~crdtstream.raft.storage.Storage`; the
rest live in :class:`Unstable` until the driver reports them durable (``stable_to``). A snapshot
received from the leader also waits in ``Unstable`` until the driver has persisted it.
"""

from __future__ import annotations

from collections.abc import Sequence

from crdtstream.errors import ProtocolViolationError
from crdtstream.raft.storage import LogCompactedError, LogUnavailableError, Storage, limit_size
from crdtstream.raft.types import Entry, Snapshot

__all__ = ["RaftLog", "Unstable"]


class Unstable:
    """Entries (and possibly a snapshot) handed to the driver but not yet durable."""

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        """The first index when a pending snapshot defines it."""
        return None if self.snapshot is None else self.snapshot.meta.index + 1

    def maybe_last_index(self) -> int | None:
        """The last index held here, if any."""
        if self.entries:
            return self.offset + len(self.entries) - 1
        return None if self.snapshot is None else self.snapshot.meta.index

    def maybe_term(self, index: int) -> int | None:
        """The term at ``index`` if this tail knows it."""
        if index < self.offset:
            if self.snapshot is not None and self.snapshot.meta.index == index:
                return self.snapshot.meta.term
            return None
        last = self.maybe_last_index()
        if last is None or index > last:
            return None
        return self.entries[index - self.offset].term

    def stable_to(self, index: int, term: int) -> None:
        """Forget entries up to ``index`` once persisted (unless they were replaced meanwhile)."""
        if self.maybe_term(index) != term or index < self.offset:
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        """Forget the pending snapshot once persisted."""
        if self.snapshot is not None and self.snapshot.meta.index == index:
            self.snapshot = None

    def restore(self, snapshot: Snapshot) -> None:
        """Replace everything by ``snapshot``."""
        self.offset = snapshot.meta.index + 1
        self.entries = []
        self.snapshot = snapshot

    def truncate_and_append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries``, dropping any held entries at or after the first one's index."""
        after = entries[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(entries)
        elif after <= self.offset:
            # The whole tail is replaced; earlier stable entries are overwritten on persist.
            self.offset = after
            self.entries = list(entries)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(entries)

    def slice(self, low: int, high: int) -> list[Entry]:
        """Entries ``[low, high)``, which must lie within this tail."""
        return self.entries[low - self.offset : high - self.offset]


class RaftLog:
    """Storage, unstable tail, and the commit / apply positions."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        # Everything up to the snapshot is committed and applied by definition.
        self.committed = first - 1
        self.applied = first - 1
        self.applying = first - 1

    # -- positions --

    def first_index(self) -> int:
        """The first index still held as an entry."""
        index = self.unstable.maybe_first_index()
        return self.storage.first_index() if index is None else index

    def last_index(self) -> int:
        """The index of the last entry (or of the snapshot when there is none)."""
        index = self.unstable.maybe_last_index()
        return self.storage.last_index() if index is None else index

    def term(self, index: int) -> int:
        """The term at ``index``; raises the storage lookup errors out of range."""
        if index < self.first_index() - 1:
            raise LogCompactedError(f"index {index} is compacted")
        if index > self.last_index():
            raise LogUnavailableError(f"index {index} is beyond the last index")
        term = self.unstable.maybe_term(index)
        return self.storage.term(index) if term is None else term

    def term_or_zero(self, index: int) -> int:
        """The term at ``index``, or 0 when it is unknown here."""
        try:
            return self.term(index)
        except LookupError:
            return 0

    def last_term(self) -> int:
        """The term of the last entry."""
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        """True when the entry at ``index`` has ``term``."""
        try:
            return self.term(index) == term
        except LookupError:
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: is a log ending at ``(last_index, last_term)`` at least as up to date as ours?"""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    # -- appends --

    def maybe_append(
        self, index: int, log_term: int, committed: int, entries: Sequence[Entry]
    ) -> int | None:
        """Append a leader's entries following ``(index, log_term)``; None when that does not match.

        Only the suffix after the first conflicting entry is written, so a stale or duplicate
        append never truncates entries we already hold (Figure 2, AppendEntries step 3).
        """
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                # No correct leader sends this (leader completeness): refuse it whole.
                raise ProtocolViolationError(
                    f"entry {conflict} conflicts with committed {self.committed}"
                )
            self.append(entries[conflict - index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """The index of the first entry not already held with the same term, or 0."""
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, with that term (0 unknown).

        Used for fast backtracking: every entry skipped here has a term higher than the other
        log's entry at ``index``, so none of them can match it.
        """
        while index > 0:
            try:
                our_term = self.term(index)
            except LookupError:
                return index, 0
            if our_term <= term:
                return index, our_term
            index -= 1
        return 0, 0

    def append(self, entries: Sequence[Entry]) -> int:
        """Append entries (replacing any from the first one's index); returns the last index."""
        if not entries:
            return self.last_index()
        if entries[0].index - 1 < self.committed:
            raise RuntimeError(f"append at {entries[0].index} is below commit {self.committed}")
        self.unstable.truncate_and_append(entries)
        return self.last_index()

    # -- reads --

    def unstable_entries(self) -> list[Entry]:
        """Entries the driver has yet to persist."""
        return list(self.unstable.entries)

    def entries_from(self, index: int, max_bytes: int | None) -> list[Entry]:
        """Entries from ``index`` to the end, bounded by ``max_bytes``."""
        if index > self.last_index():
            return []
        return self.slice(index, self.last_index() + 1, max_bytes)

    def slice(self, low: int, high: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[low, high)``: from storage below the unstable offset, then from the tail."""
        if low < self.first_index():
            raise LogCompactedError(f"index {low} is compacted")
        if high > self.last_index() + 1 or low > high:
            raise ValueError(f"slice [{low}, {high}) out of range")
        if low == high:
            return []
        result: list[Entry] = []
        offset = self.unstable.offset
        if low < offset:
            stored_high = min(high, offset)
            result = self.storage.entries(low, stored_high, max_bytes)
            if len(result) < stored_high - low:
                return result  # the size limit was reached inside storage
        if high > offset:
            result = result + self.unstable.slice(max(low, offset), high)
        return limit_size(result, max_bytes)

    def next_committed_entries(self, max_bytes: int | None) -> list[Entry]:
        """Committed entries not yet handed out for applying."""
        low = max(self.applying + 1, self.first_index())
        if self.committed + 1 <= low:
            return []
        return self.slice(low, self.committed + 1, max_bytes)

    def has_next_committed_entries(self) -> bool:
        """True when committed entries wait to be applied."""
        return self.committed > max(self.applying, self.first_index() - 1)

    def snapshot(self) -> Snapshot:
        """The newest snapshot (a pending one first)."""
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    # -- state changes --

    def commit_to(self, index: int) -> None:
        """Raise the commit index (never lowers it)."""
        if index > self.committed:
            if index > self.last_index():
                raise RuntimeError(f"commit {index} is beyond last index {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit up to ``index`` only if that entry is of ``term`` (the figure-8 rule, §5.4.2)."""
        if index > self.committed and self.term_or_zero(index) == term:
            self.commit_to(index)
            return True
        return False

    def applying_to(self, index: int) -> None:
        """Record that entries up to ``index`` were handed out for applying."""
        self.applying = max(self.applying, index)

    def applied_to(self, index: int) -> None:
        """Record that the state machine has applied up to ``index``."""
        if index > self.committed:
            raise RuntimeError(f"applied {index} is beyond commit {self.committed}")
        self.applied = max(self.applied, index)
        self.applying = max(self.applying, index)

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``(index, term)`` are durable."""
        self.unstable.stable_to(index, term)

    def stable_snapshot_to(self, index: int) -> None:
        """The snapshot at ``index`` is durable."""
        self.unstable.stable_snapshot_to(index)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the log with ``snapshot``; everything it covers is committed."""
        self.committed = snapshot.meta.index
        self.unstable.restore(snapshot)
