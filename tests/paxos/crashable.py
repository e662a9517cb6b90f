"""Acceptor storage that can crash: records saved but not yet synced are lost.

The Paxos counterpart of :mod:`tests.crashable`: a save is visible at once (as the page cache
makes it), durable only after :meth:`sync`, and :meth:`crash` brings the storage back to what a
restart would read.
"""

from __future__ import annotations

from collections.abc import Mapping

from crdtstream.paxos.types import AcceptorRecord

__all__ = ["CrashableAcceptorStorage"]


class CrashableAcceptorStorage:
    """A durable image and the records saved since the last sync."""

    def __init__(self) -> None:
        self.durable: dict[str, AcceptorRecord] = {}
        self.pending: dict[str, AcceptorRecord] = {}
        self.sync_count = 0
        self.records_lost = 0
        """Records saved but never synced when a crash struck (the nemesis proves it bit)."""

    def load(self) -> list[tuple[str, AcceptorRecord]]:
        """The durable records (what a restart reads)."""
        return list(self.durable.items())

    def save(self, records: Mapping[str, AcceptorRecord]) -> None:
        """Write records; durable at the next sync."""
        self.pending.update(records)

    def sync(self) -> None:
        """Make every saved record durable."""
        if self.pending:
            self.durable.update(self.pending)
            self.pending.clear()
            self.sync_count += 1

    def crash(self) -> None:
        """Lose every record saved since the last sync."""
        self.records_lost += len(self.pending)
        self.pending.clear()

    @property
    def unsynced_writes(self) -> int:
        """How many records a crash now would lose."""
        return len(self.pending)
