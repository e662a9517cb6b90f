"""Strong keys on the Paxos backend: one node's :class:`~crdtstream.paxos.node.PaxosNode`
driven inside the engine.

Rules of this file: it performs the driver's duties for Paxos and nothing else — save the
Ready's acceptor records and sync them (the storage is injected, so the file stays pure), only
then send its messages, then complete its requests, then advance. The acceptors are the Raft
voters (a fixed set: membership changes are not supported by this backend). Which node
proposes for a key is the core's choice (:class:`~crdtstream.paxos.node.PaxosNode`): the key's
preferred proposer, to which this node forwards the key's operations as messages like any
other, or this node itself when it leads the key or that proposer did not answer in time.
Time comes in as the engine's monotonic clock and becomes ticks of
``PaxosConfig.tick_ms``.

Requests complete through the same callbacks as Raft's (:data:`Completion`): a write with its
:class:`Result` (applied at most once thanks to its session and idempotency key), a read with
the key's windows, or a failure with :class:`~crdtstream.errors.UnavailableError` at the
deadline, whose text says whether the outcome is unknown (it may still take effect) or the
write was not applied.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from crdtstream.config import WindowConfig
from crdtstream.engine.requests import Completion, Send
from crdtstream.errors import DecodeError, RefusedError, UnavailableError
from crdtstream.paxos.node import PaxosConfig, PaxosNode
from crdtstream.paxos.storage import AcceptorStorage, persist_ready
from crdtstream.paxos.types import Message, decode_messages, encode_messages
from crdtstream.raft.commands import Command

__all__ = ["PaxosReplica", "ReplicaCounters"]


@dataclass(slots=True)
class ReplicaCounters:
    """The requests this node's replica completed (read through ``dataclasses.asdict``)."""

    writes_ok: int = 0
    writes_failed: int = 0
    reads_ok: int = 0
    reads_failed: int = 0
    malformed: int = 0
    """Frames that did not decode or were misaddressed."""


class PaxosReplica:
    """A Paxos proposer (and, on a voter, an acceptor) with the requests waiting on it."""

    def __init__(
        self,
        node_id: str,
        acceptors: Sequence[str],
        storage: AcceptorStorage,
        window: WindowConfig,
        rng: random.Random,
        send: Send,
        *,
        monotonic_ms: int,
        config: PaxosConfig | None = None,
    ) -> None:
        """Start from the records ``storage`` holds, at the clock reading ``monotonic_ms``."""
        self.node_id = node_id
        self.storage = storage
        self.config = config or PaxosConfig()
        self.node = PaxosNode(node_id, acceptors, window, rng, self.config, storage.load())
        self._send = send
        self._started_ms = monotonic_ms
        self._ticks_done = 0
        self._waiting: dict[int, tuple[Completion, bool]] = {}
        """Each operation's completion and whether it is a write."""
        self.counters = ReplicaCounters()

    def ticks_for(self, timeout_ms: int) -> int:
        """A timeout in ticks (at least one)."""
        return max(1, timeout_ms // self.config.tick_ms)

    def submit(self, command: Command, timeout_ms: int, done: Completion) -> None:
        """Run ``command`` on its key; ``done`` runs once it took effect or its deadline passed."""
        operation = self.node.submit(command.key, command, self.ticks_for(timeout_ms))
        self._waiting[operation] = (done, True)

    def read(self, key: str, timeout_ms: int, done: Completion) -> None:
        """A linearizable read of ``key`` (a full round of the identity change)."""
        self._waiting[self.node.read(key, self.ticks_for(timeout_ms))] = (done, False)

    def tick(self, monotonic_ms: int) -> None:
        """Run the ticks due by ``monotonic_ms``."""
        due = (monotonic_ms - self._started_ms) // self.config.tick_ms
        while self._ticks_done < due:
            self._ticks_done += 1
            self.node.tick()

    def step(self, source: str, payload: bytes) -> None:
        """Handle one ``PAXOS_MESSAGE`` frame; malformed or misaddressed ones are counted."""
        try:
            messages = decode_messages(payload)
        except DecodeError:
            self.counters.malformed += 1
            return
        # One sender and one destination per frame (the encoding has them once).
        if messages[0].sender != source or messages[0].to != self.node_id:
            self.counters.malformed += 1
            return
        for message in messages:
            self.node.step(message)

    def process_ready(self) -> None:
        """Persist and sync, then send, then complete, then advance, until nothing is ready."""
        node = self.node
        while node.has_ready():
            ready = node.ready()
            persist_ready(self.storage, ready)
            by_destination: dict[str, list[Message]] = defaultdict(list)
            for message in ready.messages:
                by_destination[message.to].append(message)
            for destination, messages in by_destination.items():
                self._send(destination, encode_messages(messages))
            for outcome in ready.outcomes:
                waiting = self._waiting.pop(outcome.operation_id, None)
                if waiting is None:
                    continue
                done, write = waiting
                self._count(write, ok=not outcome.error)
                if outcome.error:
                    kind = RefusedError if outcome.refused else UnavailableError
                    done(None, kind(outcome.error))
                else:
                    done(outcome.answer, None)
            node.advance(ready)

    def _count(self, write: bool, *, ok: bool) -> None:
        counters = self.counters
        if write and ok:
            counters.writes_ok += 1
        elif write:
            counters.writes_failed += 1
        elif ok:
            counters.reads_ok += 1
        else:
            counters.reads_failed += 1

    def fail_all(self, error: Exception) -> None:
        """Fail every request in flight (the node is shutting down); a write failed here may
        still take effect elsewhere."""
        waiting, self._waiting = self._waiting, {}
        for done, _ in waiting.values():
            done(None, error)

    def status(self) -> dict[str, object]:
        """Counters of the proposer, the acceptor and the requests."""
        return {
            "acceptors": list(self.node.acceptors),
            "pending": self.node.pending,
            **dataclasses.asdict(self.counters),
            **dataclasses.asdict(self.node.counters),
            **{
                f"acceptor_{name}": count
                for name, count in dataclasses.asdict(self.node.acceptor.counters).items()
            },
        }
