"""The storage the Raft core reads from, and an in-memory implementation (etcd-io/raft style).

The core only *reads* stable storage; the driver *writes* it from each :class:`Ready` (entries,
hard state, snapshot) before sending that Ready's messages. A storage holds a snapshot followed
by a contiguous run of entries; the snapshot's ``(index, term)`` stands in for the compacted
prefix, so ``term(snapshot.index)`` still answers.

Two signals are part of the protocol (both are :class:`LookupError`, not user-facing errors):
:class:`LogCompactedError` when an index lies at or before the snapshot, and
:class:`LogUnavailableError` when it lies after the last stored entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from crdtstream.raft.types import (
    EMPTY_HARD_STATE,
    ENTRY_OVERHEAD_BYTES,
    Entry,
    HardState,
    Ready,
    Snapshot,
    SnapshotMeta,
)

__all__ = [
    "DurableStorage",
    "LogCompactedError",
    "LogUnavailableError",
    "MemoryStorage",
    "SnapshotOutOfDateError",
    "Storage",
    "limit_size",
    "persist_ready",
]


class LogCompactedError(LookupError):
    """The requested index has been compacted into the snapshot."""


class LogUnavailableError(LookupError):
    """The requested index is beyond the last stored entry."""


class SnapshotOutOfDateError(LookupError):
    """A snapshot older than (or as old as) the stored one was offered."""


class Storage(Protocol):
    """What the core needs from stable storage. Every method reads; none may block."""

    def initial_state(self) -> tuple[HardState, tuple[str, ...]]:
        """The persisted hard state and the voter set of the stored snapshot."""
        ...

    def entries(self, low: int, high: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[low, high)``, at least one when any exists, bounded by ``max_bytes``."""
        ...

    def term(self, index: int) -> int:
        """The term of the entry at ``index`` (valid from ``first_index() - 1``)."""
        ...

    def first_index(self) -> int:
        """The index of the first entry that may be read (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """The index of the last stored entry (the snapshot index when there is none)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot."""
        ...


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``entries`` within ``max_bytes`` (always at least one entry)."""
    if max_bytes is None or len(entries) <= 1:
        return entries
    if sum([len(e.data) for e in entries]) + ENTRY_OVERHEAD_BYTES * len(entries) <= max_bytes:
        return entries  # the common case, without a Python-level loop of method calls
    total = 0
    for count, entry in enumerate(entries):
        total += entry.size_bytes()
        if total > max_bytes and count > 0:
            return entries[:count]
    return entries


class MemoryStorage:
    """Storage kept in memory: for tests, and as the model the on-disk log must match.

    ``self._entries[0]`` is a placeholder standing for the snapshot: its index and term are the
    snapshot's, so lookups need no special case at the boundary.
    """

    def __init__(self, voters: Sequence[str] = ()) -> None:
        self._hard_state = EMPTY_HARD_STATE
        self._snapshot = Snapshot(SnapshotMeta(0, 0, tuple(voters)))
        self._entries: list[Entry] = [Entry(0, 0)]

    # -- reads (the Storage protocol) --

    def initial_state(self) -> tuple[HardState, tuple[str, ...]]:
        """The persisted hard state and the voter set of the stored snapshot."""
        return self._hard_state, self._snapshot.meta.voters

    def entries(self, low: int, high: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[low, high)``, at least one when any exists, bounded by ``max_bytes``."""
        offset = self._entries[0].index
        if low <= offset:
            raise LogCompactedError(f"index {low} is compacted (snapshot at {offset})")
        if high > self.last_index() + 1:
            raise LogUnavailableError(f"entries up to {high - 1} beyond last {self.last_index()}")
        return limit_size(self._entries[low - offset : high - offset], max_bytes)

    def term(self, index: int) -> int:
        """The term of the entry at ``index`` (valid from ``first_index() - 1``)."""
        offset = self._entries[0].index
        if index < offset:
            raise LogCompactedError(f"index {index} is compacted (snapshot at {offset})")
        if index - offset >= len(self._entries):
            raise LogUnavailableError(f"index {index} beyond last {self.last_index()}")
        return self._entries[index - offset].term

    def first_index(self) -> int:
        """The index of the first entry that may be read (snapshot index + 1)."""
        return self._entries[0].index + 1

    def last_index(self) -> int:
        """The index of the last stored entry (the snapshot index when there is none)."""
        return self._entries[0].index + len(self._entries) - 1

    def snapshot(self) -> Snapshot:
        """The most recent snapshot."""
        return self._snapshot

    # -- writes (called by the driver) --

    def set_hard_state(self, state: HardState) -> None:
        """Record the hard state of a Ready."""
        self._hard_state = state

    def append(self, entries: Sequence[Entry]) -> None:
        """Store entries, replacing any stored entries from the first one's index on."""
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return  # entirely covered by the snapshot already
        start = max(first, entries[0].index)
        fresh = list(entries[start - entries[0].index :])
        offset = self._entries[0].index
        if start - offset > len(self._entries):
            raise ValueError(f"entry {start} leaves a gap after last index {self.last_index()}")
        del self._entries[start - offset :]
        self._entries.extend(fresh)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace everything with ``snapshot`` (received from the leader)."""
        if snapshot.meta.index <= self._snapshot.meta.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {snapshot.meta.index} is not newer than {self._snapshot.meta.index}"
            )
        self._snapshot = snapshot
        self._entries = [Entry(snapshot.meta.term, snapshot.meta.index)]

    def create_snapshot(self, index: int, voters: Sequence[str], data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at ``index`` (the log is kept until compacted)."""
        if index <= self._snapshot.meta.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {index} is not newer than {self._snapshot.meta.index}"
            )
        if index > self.last_index():
            raise ValueError(f"snapshot index {index} is beyond last index {self.last_index()}")
        meta = SnapshotMeta(index, self.term(index), tuple(voters))
        self._snapshot = Snapshot(meta, data)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """Discard entries before ``compact_index``; it becomes the new placeholder."""
        offset = self._entries[0].index
        if compact_index <= offset:
            raise LogCompactedError(f"index {compact_index} is already compacted")
        if compact_index > self.last_index():
            raise ValueError(f"compact index {compact_index} beyond last {self.last_index()}")
        placeholder = Entry(self._entries[compact_index - offset].term, compact_index)
        self._entries = [placeholder, *self._entries[compact_index - offset + 1 :]]

    def sync(self) -> None:
        """Nothing to make durable: a node without a data directory keeps its Raft log in
        memory, and loses it when the process ends."""


class DurableStorage(Storage, Protocol):
    """The Raft storage plus the write side the driver calls for every ``Ready``
    (:class:`MemoryStorage` in memory; ``crdtstream.storage.wal.WalStorage`` on disk)."""

    def append(self, entries: Sequence[Entry]) -> None:
        """Store entries, replacing any stored entries from the first one's index on."""
        ...

    def set_hard_state(self, state: HardState) -> None:
        """Record the hard state (term, vote, commit)."""
        ...

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the log with a snapshot received from the leader."""
        ...

    def create_snapshot(self, index: int, voters: Sequence[str], data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at ``index``; the log stays until compacted."""
        ...

    def compact(self, compact_index: int) -> None:
        """Discard entries before ``compact_index``."""
        ...

    def sync(self) -> None:
        """Make every write so far durable."""
        ...


def persist_ready(storage: DurableStorage, ready: Ready) -> None:
    """Persist a Ready in the order that keeps the log consistent, then make it durable.

    The snapshot goes first: the Ready's entries follow it, and applying a snapshot after them
    would discard them.
    """
    if ready.snapshot is not None and not ready.snapshot.is_empty():
        storage.apply_snapshot(ready.snapshot)
    if ready.entries:
        storage.append(ready.entries)
    if ready.hard_state is not None:
        storage.set_hard_state(ready.hard_state)
    if ready.must_sync:
        storage.sync()
