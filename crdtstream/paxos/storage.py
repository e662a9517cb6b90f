"""Where an acceptor's records live between runs: the protocol the driver writes through, and
an in-memory implementation (the on-disk one is
:class:`crdtstream.storage.paxos_acceptors.AcceptorFile`).

The driver saves the records of each :class:`~crdtstream.paxos.node.Ready` and syncs them
before it sends any of that Ready's messages: a promise or an accept that left before its
record was durable could be forgotten by a crash, and the acceptor could then promise a lower
ballot or lose an accepted value a majority counted on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from crdtstream.paxos.node import Ready
from crdtstream.paxos.types import AcceptorRecord

__all__ = ["AcceptorStorage", "MemoryAcceptorStorage", "persist_ready"]


class AcceptorStorage(Protocol):
    """Durable acceptor records, one per key."""

    def load(self) -> list[tuple[str, AcceptorRecord]]:
        """Every durable record, as the acceptor restarts from them."""
        ...

    def save(self, records: Mapping[str, AcceptorRecord]) -> None:
        """Write records (replacing those of the same keys); durable at the next sync."""
        ...

    def sync(self) -> None:
        """Make every record saved so far durable."""
        ...


class MemoryAcceptorStorage:
    """Records in memory: for tests, and for nodes that run without a data directory."""

    def __init__(self) -> None:
        self.records: dict[str, AcceptorRecord] = {}
        self.sync_count = 0

    def load(self) -> list[tuple[str, AcceptorRecord]]:
        """Every record saved."""
        return list(self.records.items())

    def save(self, records: Mapping[str, AcceptorRecord]) -> None:
        """Write records (replacing those of the same keys)."""
        self.records.update(records)

    def sync(self) -> None:
        """Nothing to do in memory (counted, for tests)."""
        self.sync_count += 1


def persist_ready(storage: AcceptorStorage, ready: Ready) -> None:
    """Save and sync a Ready's records (nothing when it has none): call before sending."""
    if ready.records:
        storage.save(ready.records)
        storage.sync()
