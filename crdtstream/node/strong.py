"""The strong-mode half of the driver: one Raft replica (or a client of one) inside a node.

Rules of this file: it performs the driver's duties for Raft and nothing else — persist, then
send, then apply, then advance (etcd-io/raft ``node.go``), retry what the network may have lost,
and fail what cannot finish by its deadline. The protocol itself is :class:`RawNode`'s.

Requests complete through callbacks, so the same code serves a step-by-step simulation (which
records completions in a history) and the asyncio node (which resolves futures). A request
either completes with a :class:`Result` (a write applied exactly once thanks to its
``(client_id, sequence)`` session, or a linearizable read) or fails with
:class:`~crdtstream.errors.UnavailableError` at its deadline — a failed write may still have
been applied, as in any replicated system; retrying it with the same sequence is safe.

A node outside the voter set runs a :class:`StrongClient`: it forwards each request to a voter
(``STRONG_REQUEST``), which runs it as its own and answers (``STRONG_RESPONSE``); the client
retries other voters until its deadline.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crdtstream import wire
from crdtstream.config import RaftConfig, WindowConfig
from crdtstream.errors import CrdtStreamError, DecodeError, UnavailableError
from crdtstream.raft.rawnode import RawNode, Status
from crdtstream.raft.state_machine import (
    Command,
    KeyView,
    Result,
    StateMachine,
    decode_command,
    decode_result,
    encode_command,
    encode_result,
)
from crdtstream.raft.types import Ready, Role, decode_message, encode_message
from crdtstream.raft.wal import DurableStorage, persist_ready

__all__ = ["Completion", "ReadAnswer", "StrongClient", "StrongReplica"]

ReadAnswer = KeyView | None
"""A linearizable read: the key's windows, or None for a key never written."""

Completion = Callable[[Result | ReadAnswer | None, Exception | None], None]
"""Called once per request: ``(answer, None)`` on success, ``(None, error)`` on failure."""

Send = Callable[[str, bytes], None]

RETRY_TICKS = 5
"""A request not answered after this many ticks is sent again (same session, so idempotent)."""


@dataclass(slots=True)
class _Request:
    """One outstanding request: a write (``data`` is the command) or a read (``key``)."""

    data: bytes | None
    key: str | None
    deadline_tick: int
    retry_tick: int
    done: Completion
    read_index: int | None = None


def _both(first: Completion, second: Completion) -> Completion:
    def both(answer: Result | ReadAnswer | None, error: Exception | None) -> None:
        first(answer, error)
        second(answer, error)

    return both


def _session_of(data: bytes) -> tuple[str, int]:
    command = decode_command(data)
    return command.client_id, command.sequence


class StrongReplica:
    """A Raft voter: log, durable storage, state machine, and the requests waiting on them."""

    def __init__(
        self,
        node_id: str,
        storage: DurableStorage,
        raft: RaftConfig,
        window: WindowConfig,
        rng: random.Random,
        send: Send,
    ) -> None:
        self.node_id = node_id
        self.storage = storage
        self.machine = StateMachine(window)
        snapshot = storage.snapshot()
        if not snapshot.is_empty():
            self.machine.restore(snapshot.data)
        self.raw = RawNode(node_id, storage, raft, rng, applied=self.machine.applied_index)
        self.raft_config = raft
        self._send = send
        self._tick = 0
        self._writes: dict[tuple[str, int], _Request] = {}
        self._reads: dict[bytes, list[_Request]] = {}
        self._unsent_reads: list[_Request] = []
        self._next_read_context = 0
        self._forwarded: dict[tuple[str, int], tuple[str, int]] = {}
        self.counters: dict[str, int] = dict.fromkeys(
            ("writes_ok", "writes_failed", "reads_ok", "reads_failed", "malformed", "retries"), 0
        )

    # -- requests --

    def submit(self, command: Command, timeout_ticks: int, done: Completion) -> None:
        """Propose ``command``; ``done`` runs once it is applied here or its deadline passes."""
        data = encode_command(command)
        session = (command.client_id, command.sequence)
        previous = self._writes.get(session)
        if previous is not None:  # the same request again: keep one, answer both
            previous.done = _both(previous.done, done)
            return
        request = _Request(data, None, self._tick + timeout_ticks, self._tick, done)
        self._writes[session] = request
        self._propose(request)

    def read(self, key: str, timeout_ticks: int, done: Completion) -> None:
        """A linearizable read of ``key`` (ReadIndex; reads waiting together share one round)."""
        request = _Request(None, key, self._tick + timeout_ticks, self._tick, done)
        self._unsent_reads.append(request)

    def _propose(self, request: _Request) -> None:
        assert request.data is not None
        request.retry_tick = self._tick + RETRY_TICKS
        # No leader (or too many uncommitted proposals): retried at retry_tick, by when an
        # election may have finished or the backlog drained; the deadline bounds the wait.
        with contextlib.suppress(UnavailableError):
            self.raw.propose(request.data)

    def _issue_reads(self) -> None:
        if not self._unsent_reads:
            return
        context = f"{self.node_id}/{self._next_read_context}".encode()
        self._next_read_context += 1
        batch, self._unsent_reads = self._unsent_reads, []
        for request in batch:
            request.retry_tick = self._tick + RETRY_TICKS
        self._reads[context] = batch
        self.raw.read_index(context)

    # -- inputs --

    def tick(self) -> None:
        """One Raft tick: drive timers, retry quiet requests, fail expired ones."""
        self._tick += 1
        self.raw.tick()
        for session, request in list(self._writes.items()):
            if self._tick >= request.deadline_tick:
                del self._writes[session]
                self.counters["writes_failed"] += 1
                request.done(None, UnavailableError(self._unavailable_reason("write")))
            elif self._tick >= request.retry_tick:
                self.counters["retries"] += 1
                self._propose(request)
        for context, batch in list(self._reads.items()):
            waiting = [r for r in batch if r.read_index is None]
            if waiting and all(self._tick >= r.retry_tick for r in waiting):
                self._reads[context] = [r for r in batch if r.read_index is not None]
                self._unsent_reads.extend(waiting)
        self._expire_reads()

    def _expire_reads(self) -> None:
        expired = [r for r in self._unsent_reads if self._tick >= r.deadline_tick]
        self._unsent_reads = [r for r in self._unsent_reads if self._tick < r.deadline_tick]
        for context, batch in list(self._reads.items()):
            expired += [r for r in batch if self._tick >= r.deadline_tick]
            kept = [r for r in batch if self._tick < r.deadline_tick]
            if kept:
                self._reads[context] = kept
            else:
                del self._reads[context]
        for request in expired:
            self.counters["reads_failed"] += 1
            request.done(None, UnavailableError(self._unavailable_reason("read")))

    def _unavailable_reason(self, what: str) -> str:
        status = self.raw.status()
        leader = status.leader or "none known"
        return f"strong {what} timed out: no quorum reached (leader: {leader}, term {status.term})"

    def step(self, source: str, payload: bytes) -> None:
        """Handle one Raft or forwarded-request frame; malformed frames are counted, ignored."""
        try:
            tag = wire.peek_tag(payload)
            if tag == wire.Tag.RAFT_MESSAGE:
                message = decode_message(payload)
                if message.sender == source:
                    self.raw.step(message)
                else:
                    self.counters["malformed"] += 1
            elif tag == wire.Tag.STRONG_REQUEST:
                self._serve_forwarded(source, payload)
            else:
                self.counters["malformed"] += 1
        except (CrdtStreamError, ValueError):
            self.counters["malformed"] += 1

    def _serve_forwarded(self, source: str, payload: bytes) -> None:
        request_id, data, key, timeout_ticks = wire.decode_as(
            payload, wire.Tag.STRONG_REQUEST, _forwarded_from
        )

        def answer(result: Result | ReadAnswer | None, error: Exception | None) -> None:
            self._send(source, _encode_response(request_id, result, error))

        if data is not None:
            self.submit(decode_command(data), timeout_ticks, answer)
        else:
            assert key is not None
            self.read(key, timeout_ticks, answer)

    # -- the Ready loop --

    def process_ready(self) -> None:
        """Persist, then send, then apply, then advance, until nothing is ready."""
        self._issue_reads()
        while self.raw.has_ready():
            ready = self.raw.ready()
            persist_ready(self.storage, ready)
            for message in ready.messages:
                if message.to is not None:
                    self._send(message.to, encode_message(message))
            self._apply(ready)
            self.raw.advance(ready)
            self._serve_reads()

    def _apply(self, ready: Ready) -> None:
        if ready.snapshot is not None and not ready.snapshot.is_empty():
            self.machine.restore(ready.snapshot.data)
        for entry in ready.committed_entries:
            if entry.index <= self.machine.applied_index:
                continue
            result = self.machine.apply_entry(entry)
            if result is None:
                continue
            try:
                session = _session_of(entry.data)
            except DecodeError:
                continue
            request = self._writes.pop(session, None)
            if request is not None:
                self.counters["writes_ok"] += 1
                request.done(result, None)
        for state in ready.read_states:
            for request in self._reads.get(state.request_ctx, []):
                request.read_index = state.index
        self._maybe_compact()

    def _serve_reads(self) -> None:
        applied = self.machine.applied_index
        for context, batch in list(self._reads.items()):
            ready = [r for r in batch if r.read_index is not None and r.read_index <= applied]
            if not ready:
                continue
            remaining = [r for r in batch if r not in ready]
            if remaining:
                self._reads[context] = remaining
            else:
                del self._reads[context]
            for request in ready:
                assert request.key is not None
                self.counters["reads_ok"] += 1
                request.done(self.machine.read(request.key), None)

    def _maybe_compact(self) -> None:
        applied = self.machine.applied_index
        every = self.raft_config.snapshot_every_entries
        if applied - self.storage.snapshot().meta.index < every:
            return
        voters = self.raw.status().voters
        self.storage.create_snapshot(applied, voters, self.machine.snapshot())
        self.storage.compact(applied)

    # -- inspection --

    def status(self) -> Status:
        """The Raft status of this replica."""
        return self.raw.status()

    @property
    def is_leader(self) -> bool:
        """Whether this replica currently leads."""
        return self.raw.status().role is Role.LEADER

    @property
    def pending(self) -> int:
        """Requests still waiting."""
        reads = sum(len(batch) for batch in self._reads.values()) + len(self._unsent_reads)
        return len(self._writes) + reads


def _forwarded_from(body: Any) -> tuple[int, bytes | None, str | None, int]:
    request_id, data, key, timeout_ticks = body
    if type(request_id) is not int or type(timeout_ticks) is not int or timeout_ticks < 1:
        raise ValueError("malformed forwarded request")
    if (data is None) == (key is None):
        raise ValueError("a forwarded request carries a command or a key")
    if data is not None and not isinstance(data, bytes):
        raise TypeError("command must be bytes")
    if key is not None and not isinstance(key, str):
        raise TypeError("key must be a string")
    return request_id, data, key, timeout_ticks


def _encode_response(
    request_id: int, answer: Result | ReadAnswer | None, error: Exception | None
) -> bytes:
    if error is not None:
        body: list[Any] = [request_id, "error", str(error)]
    elif isinstance(answer, Result):
        body = [request_id, "result", encode_result(answer)]
    elif answer is None:
        body = [request_id, "read", None]
    else:
        body = [request_id, "read", [answer.kind, [list(w) for w in answer.windows]]]
    return wire.encode(wire.Tag.STRONG_RESPONSE, body)


def _response_from(body: Any) -> tuple[int, Result | ReadAnswer | None, Exception | None]:
    request_id, kind, payload = body
    if type(request_id) is not int:
        raise ValueError("malformed response id")
    if kind == "error":
        return request_id, None, UnavailableError(str(payload))
    if kind == "result":
        return request_id, decode_result(payload), None
    if kind == "read":
        if payload is None:
            return request_id, None, None
        view_kind, windows = payload
        return request_id, KeyView(str(view_kind), tuple(tuple(w) for w in windows)), None
    raise ValueError(f"unknown response kind {kind!r}")


class StrongClient:
    """Strong operations for a node outside the voter set: forwarded to voters, retried."""

    def __init__(self, voters: Sequence[str], rng: random.Random, send: Send) -> None:
        if not voters:
            raise ValueError("a strong client needs at least one voter")
        self.voters = list(voters)
        self._rng = rng
        self._send = send
        self._tick = 0
        self._next_id = 0
        self._requests: dict[int, tuple[_Request, int]] = {}
        self.counters: dict[str, int] = dict.fromkeys(("answered", "failed", "malformed"), 0)

    def submit(self, command: Command, timeout_ticks: int, done: Completion) -> None:
        """Forward a write to a voter."""
        self._start(_Request(encode_command(command), None, 0, 0, done), timeout_ticks)

    def read(self, key: str, timeout_ticks: int, done: Completion) -> None:
        """Forward a linearizable read to a voter."""
        self._start(_Request(None, key, 0, 0, done), timeout_ticks)

    def _start(self, request: _Request, timeout_ticks: int) -> None:
        request.deadline_tick = self._tick + timeout_ticks
        request_id = self._next_id
        self._next_id += 1
        self._requests[request_id] = (request, timeout_ticks)
        self._forward(request_id)

    def _forward(self, request_id: int) -> None:
        request, timeout_ticks = self._requests[request_id]
        request.retry_tick = self._tick + RETRY_TICKS * 2
        remaining = max(1, request.deadline_tick - self._tick)
        body = [request_id, request.data, request.key, min(timeout_ticks, remaining)]
        voter = self.voters[self._rng.randrange(len(self.voters))]
        self._send(voter, wire.encode(wire.Tag.STRONG_REQUEST, body))

    def tick(self) -> None:
        """Retry unanswered requests at another voter; fail those past their deadline."""
        self._tick += 1
        for request_id, (request, _) in list(self._requests.items()):
            if self._tick >= request.deadline_tick:
                del self._requests[request_id]
                self.counters["failed"] += 1
                request.done(None, UnavailableError("strong request timed out at every voter"))
            elif self._tick >= request.retry_tick:
                self._forward(request_id)

    def step(self, source: str, payload: bytes) -> None:
        """Handle a voter's answer."""
        try:
            request_id, answer, error = wire.decode_as(
                payload, wire.Tag.STRONG_RESPONSE, _response_from
            )
        except DecodeError:
            self.counters["malformed"] += 1
            return
        entry = self._requests.pop(request_id, None)
        if entry is None:
            return  # answered already (a retry's duplicate)
        if error is not None and self._tick < entry[0].deadline_tick:
            self._requests[request_id] = entry  # that voter gave up early: try another
            self._forward(request_id)
            return
        self.counters["answered"] += 1
        entry[0].done(answer, error)

    def process_ready(self) -> None:
        """Nothing to persist: a client holds no Raft state."""


def voter_ids(voters: Mapping[str, str]) -> list[str]:
    """The voter ids of a ``{node_id: address}`` mapping, sorted for determinism."""
    return sorted(voters)
