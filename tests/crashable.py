"""An in-memory Raft storage that can crash: what was written but not yet synced is lost.

It has the write side of :class:`~crdtstream.storage.wal.WalStorage` and the same durability rules,
so a simulation exercises the driver's persist-before-send ordering without touching a disk: a
write is visible at once (as the page cache makes it), durable only after :meth:`sync`, and
:meth:`crash` brings the storage back to exactly what the write-ahead log would replay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from crdtstream.raft.storage import MemoryStorage
from crdtstream.raft.types import Entry, HardState, Snapshot

__all__ = ["CrashableStorage"]

_Write = Callable[[MemoryStorage], object]


class CrashableStorage:
    """A durable image and a visible one; ``sync`` moves pending writes into the durable image."""

    def __init__(self, voters: Sequence[str] = ()) -> None:
        self._voters = tuple(voters)
        self._durable = MemoryStorage(voters)
        self._visible = MemoryStorage(voters)
        self._pending: list[_Write] = []
        self.sync_count = 0
        """How many syncs made something durable (group commit keeps this low)."""

    # -- reads (the Storage protocol) --

    def initial_state(self) -> tuple[HardState, tuple[str, ...]]:
        """The hard state and the voter set of the stored snapshot."""
        return self._visible.initial_state()

    def entries(self, low: int, high: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[low, high)``, at least one when any exists, bounded by ``max_bytes``."""
        return self._visible.entries(low, high, max_bytes)

    def term(self, index: int) -> int:
        """The term of the entry at ``index`` (valid from ``first_index() - 1``)."""
        return self._visible.term(index)

    def first_index(self) -> int:
        """The index of the first entry that may be read (snapshot index + 1)."""
        return self._visible.first_index()

    def last_index(self) -> int:
        """The index of the last stored entry (the snapshot index when there is none)."""
        return self._visible.last_index()

    def snapshot(self) -> Snapshot:
        """The most recent snapshot."""
        return self._visible.snapshot()

    # -- writes --

    def append(self, entries: Sequence[Entry]) -> None:
        """Store entries, replacing any stored entries from the first one's index on."""
        batch = list(entries)
        self._write(lambda storage: storage.append(batch))

    def set_hard_state(self, state: HardState) -> None:
        """Record the hard state (term, vote, commit)."""
        self._write(lambda storage: storage.set_hard_state(state))

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the log with a snapshot received from the leader."""
        self._write(lambda storage: storage.apply_snapshot(snapshot))

    def create_snapshot(self, index: int, voters: Sequence[str], data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at ``index``; durable at the next sync."""
        snapshot = self._visible.create_snapshot(index, voters, data)
        self._pending.append(lambda storage: storage.create_snapshot(index, voters, data))
        return snapshot

    def compact(self, compact_index: int) -> None:
        """Discard entries before ``compact_index``; a snapshot must cover it."""
        newest = self._visible.snapshot().meta.index
        if compact_index > newest:
            raise ValueError(f"compact index {compact_index} is beyond the snapshot at {newest}")
        self._visible.compact(compact_index)

    def sync(self) -> None:
        """Make every write so far durable."""
        if not self._pending:
            return
        for write in self._pending:
            write(self._durable)
        self._pending.clear()
        self.sync_count += 1

    def crash(self) -> None:
        """Lose every write since the last sync; what is left is what a restart would replay."""
        self._pending.clear()
        durable = self._durable
        visible = MemoryStorage(self._voters)
        snapshot = durable.snapshot()
        if not snapshot.is_empty():
            visible.apply_snapshot(snapshot)
        first = snapshot.meta.index + 1
        if durable.last_index() >= first:
            visible.append(durable.entries(first, durable.last_index() + 1))
        visible.set_hard_state(durable.initial_state()[0])
        self._visible = visible

    @property
    def unsynced_writes(self) -> int:
        """How many writes a crash now would lose."""
        return len(self._pending)

    def _write(self, write: _Write) -> None:
        write(self._visible)
        self._pending.append(write)
