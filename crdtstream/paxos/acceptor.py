"""The acceptor of per-key CASPaxos (Rystsov 2018, §2.2), one record per key.

Its two rules, quoted from the paper's description of the acceptor:

* prepare: "Returns a conflict if it already saw a greater ballot number. Persists the ballot
  number as a promise and returns a confirmation either with an empty value (if it hasn't
  accepted any value yet) or with a tuple of an accepted value and its ballot number."
* accept: "Returns a conflict if it already saw a greater ballot number. Erases the promise,
  marks the received tuple (ballot number, value) as the accepted value and returns a
  confirmation."

"Saw" covers both the promised and the accepted ballot. A ballot equal to the promised one is
not a conflict: a duplicated PREPARE is answered again, and the proposer that holds the
promise may ACCEPT with it.

The one-round-trip optimisation (§2.2.1, "piggybacking the next prepare on the current
accept"): an ACCEPT may name, in its ``accepted`` field, the proposer's next ballot for the
key; an acceptor that accepts also promises that ballot, in the same durable record. A
majority of ACCEPTED answers is then also a majority of promises for the next ballot, with the
value just accepted as the highest accepted one, so the proposer's next change of the key may
go straight to ACCEPT.

Pure: a step changes records and returns the answer; the records it changed wait in
:attr:`Acceptor.unsynced` until the driver has made them durable, and the answer must not
leave before then (:class:`~crdtstream.paxos.node.PaxosNode` holds it back).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from crdtstream.paxos.types import ZERO_BALLOT, AcceptorRecord, Ballot, Message, MessageType

__all__ = ["Acceptor", "AcceptorCounters"]


@dataclass(slots=True)
class AcceptorCounters:
    """What this acceptor answered (read as a mapping through ``dataclasses.asdict``)."""

    promises: int = 0
    accepts: int = 0
    conflicts: int = 0


class Acceptor:
    """The records of every key this node accepts for."""

    def __init__(self, node_id: str, records: Iterable[tuple[str, AcceptorRecord]] = ()) -> None:
        """Start from the durable ``records`` (the last one of a key wins)."""
        self.node_id = node_id
        self.records: dict[str, AcceptorRecord] = dict(records)
        self.unsynced: dict[str, AcceptorRecord] = {}
        """Records changed since the driver last took them; persisted before any answer."""
        self.counters = AcceptorCounters()

    def record(self, key: str) -> AcceptorRecord:
        """The record of ``key`` (an empty one for a key never seen)."""
        return self.records.get(key) or AcceptorRecord()

    def step(self, message: Message) -> Message:
        """Answer a PREPARE or an ACCEPT; ``ValueError`` for any other type."""
        record = self.record(message.key)
        seen = max(record.promised, record.accepted)
        if message.ballot < seen:
            self.counters.conflicts += 1
            return self._answer(message, MessageType.REJECT, seen)
        if message.type is MessageType.PREPARE:
            if message.ballot != record.promised:
                self._store(
                    message.key, AcceptorRecord(message.ballot, record.accepted, record.value)
                )
            self.counters.promises += 1
            return self._answer(message, MessageType.PROMISE, record.accepted, record.value)
        if message.type is MessageType.ACCEPT:
            promised = message.ballot
            following = message.accepted  # the next ballot, promised along (§2.2.1)
            if following > promised and following[1] == promised[1]:
                promised = following
            accepted = AcceptorRecord(promised, message.ballot, message.value)
            if accepted != record:
                self._store(message.key, accepted)
            self.counters.accepts += 1
            return self._answer(message, MessageType.ACCEPTED)
        raise ValueError(f"an acceptor answers PREPARE and ACCEPT, not {message.type.name}")

    def take_unsynced(self) -> dict[str, AcceptorRecord]:
        """The records to persist now (the driver syncs them before sending any answer)."""
        unsynced, self.unsynced = self.unsynced, {}
        return unsynced

    def _store(self, key: str, record: AcceptorRecord) -> None:
        self.records[key] = record
        self.unsynced[key] = record

    def _answer(
        self,
        message: Message,
        kind: MessageType,
        accepted: Ballot = ZERO_BALLOT,
        value: bytes = b"",
    ) -> Message:
        return Message(
            kind, self.node_id, message.sender, message.key, message.ballot, accepted, value
        )
