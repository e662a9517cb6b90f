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

A node outside the voter set runs a :class:`StrongClient`: it forwards requests to a voter
(``STRONG_REQUEST``), which runs them as its own and answers (``STRONG_RESPONSE``); the client
retries other voters until the deadline.

Everything is batched per pump (one call of ``process_ready``), so the cost per request falls
as the load rises: a replica proposes all writes of a pump in one step (a follower forwards them
in one message), a client sends all requests of a pump to one voter in one frame, and a voter
answers each peer with one frame. Each answer names the voter's known leader, so a client sends
straight to the leader once it knows it. A leader sends its appends before it writes its own
log when the Ready allows it (``Ready.send_while_persisting``), so the followers' fsyncs run
during its own.

Per client session, a write waits (queued, its deadline running) while it is
``session_results_max`` or more sequences ahead of the oldest unfinished write of its session:
the state machine keeps only that many results per session and would refuse, after commit, a
write overtaken by that many newer ones (a lost one retried late, say).
"""

from __future__ import annotations

import contextlib
import heapq
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crdtstream import wire
from crdtstream.config import RaftConfig, WindowConfig
from crdtstream.errors import CrdtStreamError, DecodeError, UnavailableError
from crdtstream.raft.commands import result_body, result_from
from crdtstream.raft.rawnode import RawNode, Status
from crdtstream.raft.state_machine import (
    Command,
    KeyView,
    Result,
    StateMachine,
    decode_command,
    encode_command,
)
from crdtstream.raft.types import Ready, Role, decode_message, encode_message
from crdtstream.raft.wal import DurableStorage, persist_ready

__all__ = ["Completion", "ReadAnswer", "StrongClient", "StrongReplica"]

ReadAnswer = KeyView | None
"""A linearizable read: the key's windows, or None for a key never written."""

Completion = Callable[[Result | ReadAnswer | None, Exception | None], None]
"""Called once per request: ``(answer, None)`` on success, ``(None, error)`` on failure."""

Send = Callable[[str, bytes], None]

Session = tuple[str, int]
"""A write's ``(client_id, sequence)``."""

RETRY_TICKS = 5
"""A request not answered after this many ticks is sent again (same session, so idempotent)."""

SESSION_RESULTS_MAX = StateMachine().session_results_max
"""Results per session that a voter's state machine keeps (its default, which nodes use)."""

FRAME_BYTES_MAX = 256 * 1024
"""Batched requests or answers are split into frames of at most about this size, well under
the transport's payload limit."""


@dataclass(slots=True)
class _Request:
    """One outstanding request: a write (``data`` is the command) or a read (``key``)."""

    data: bytes | None
    key: str | None
    deadline_tick: int
    retry_tick: int
    done: Completion
    read_index: int | None = None
    session: Session | None = None
    held: bool = False
    """A write waiting for older writes of its session to finish before it is sent."""


def _both(first: Completion, second: Completion) -> Completion:
    def both(answer: Result | ReadAnswer | None, error: Exception | None) -> None:
        first(answer, error)
        second(answer, error)

    return both


class _SessionWindows:
    """The unfinished writes of each client session, and which of them are held back.

    A write may be sent while its sequence is less than the oldest unfinished sequence of its
    session plus ``size``; the others wait until enough older ones finish (answered or
    expired), which always happens by their deadlines.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._open: dict[str, set[int]] = {}
        self._oldest: dict[str, list[int]] = {}  # a heap over _open, pruned when read
        self._held: dict[str, list[int]] = {}  # a heap of held sequences, pruned the same way

    def admit(self, session: Session) -> bool:
        """Open a write; True when it may be sent now, False when it is held."""
        client, sequence = session
        self._open.setdefault(client, set()).add(sequence)
        heapq.heappush(self._oldest.setdefault(client, []), sequence)
        if sequence < self._oldest_open(client) + self.size:
            return True
        heapq.heappush(self._held.setdefault(client, []), sequence)
        return False

    def finish(self, session: Session) -> list[Session]:
        """Close a write; returns the held writes that may be sent now."""
        client, sequence = session
        sequences = self._open.get(client)
        if sequences is None or sequence not in sequences:
            return []
        sequences.discard(sequence)
        if not sequences:
            for table in (self._open, self._oldest, self._held):
                table.pop(client, None)
            return []
        limit = self._oldest_open(client) + self.size
        held = self._held.get(client, [])
        released = []
        while held and held[0] < limit:
            candidate = heapq.heappop(held)
            if candidate in sequences:
                released.append((client, candidate))
        return released

    def _oldest_open(self, client: str) -> int:
        heap, sequences = self._oldest[client], self._open[client]
        while heap[0] not in sequences:
            heapq.heappop(heap)
        return heap[0]


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
        self._writes: dict[Session, _Request] = {}
        self._sessions_by_command: dict[bytes, Session] = {}
        self._windows = _SessionWindows(self.machine.session_results_max)
        self._unproposed: list[bytes] = []
        self._reads: dict[bytes, list[_Request]] = {}
        self._unsent_reads: list[_Request] = []
        self._next_read_context = 0
        self._answers: dict[str, list[list[Any]]] = {}
        self.counters: dict[str, int] = dict.fromkeys(
            ("writes_ok", "writes_failed", "reads_ok", "reads_failed", "malformed", "retries"), 0
        )

    # -- requests --

    def submit(self, command: Command, timeout_ticks: int, done: Completion) -> None:
        """Propose ``command``; ``done`` runs once it is applied here or its deadline passes."""
        session = (command.client_id, command.sequence)
        previous = self._writes.get(session)
        if previous is not None:  # the same request again: keep one, answer both
            previous.done = _both(previous.done, done)
            return
        data = encode_command(command)
        request = _Request(data, None, self._tick + timeout_ticks, self._tick, done)
        request.session = session
        self._writes[session] = request
        # Applied entries find their request by their bytes: no second decode of each command.
        self._sessions_by_command[data] = session
        if self._windows.admit(session):
            self._propose(request)
        else:
            request.held = True

    def read(self, key: str, timeout_ticks: int, done: Completion) -> None:
        """A linearizable read of ``key`` (ReadIndex; reads waiting together share one round)."""
        request = _Request(None, key, self._tick + timeout_ticks, self._tick, done)
        self._unsent_reads.append(request)

    def _propose(self, request: _Request) -> None:
        assert request.data is not None
        request.retry_tick = self._tick + RETRY_TICKS
        self._unproposed.append(request.data)

    def _propose_batch(self) -> None:
        if not self._unproposed:
            return
        batch, self._unproposed = self._unproposed, []
        # No leader (or too many uncommitted proposals): retried at retry_tick, by when an
        # election may have finished or the backlog drained; the deadline bounds the wait.
        with contextlib.suppress(UnavailableError):
            self.raw.propose_many(batch)

    def _finish_write(
        self, session: Session, answer: Result | None, error: Exception | None
    ) -> None:
        request = self._writes.pop(session)
        assert request.data is not None
        del self._sessions_by_command[request.data]
        for released in self._windows.finish(session):
            waiting = self._writes[released]
            waiting.held = False
            self._propose(waiting)
        self.counters["writes_ok" if error is None else "writes_failed"] += 1
        request.done(answer, error)

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
                error = UnavailableError(self._unavailable_reason("write"))
                self._finish_write(session, None, error)
            elif not request.held and self._tick >= request.retry_tick:
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
        rows = wire.decode_as(payload, wire.Tag.STRONG_REQUEST, _rows_from)
        for row in rows:  # one bad request is counted; the others in its frame are served
            try:
                request_id, data, key, timeout_ticks = wire.build_checked(row, _forwarded_from)
                answer = self._answer_to(source, request_id)
                if data is not None:
                    self.submit(decode_command(data), timeout_ticks, answer)
                else:
                    assert key is not None
                    self.read(key, timeout_ticks, answer)
            except DecodeError:
                self.counters["malformed"] += 1

    def _answer_to(self, source: str, request_id: int) -> Completion:
        def answer(result: Result | ReadAnswer | None, error: Exception | None) -> None:
            row = _response_row(request_id, result, error)
            self._answers.setdefault(source, []).append(row)

        return answer

    def _send_answers(self) -> None:
        if not self._answers:
            return
        answers, self._answers = self._answers, {}
        leader = self.raw.soft_state().leader
        for destination, rows in answers.items():
            for frame in _frames(wire.Tag.STRONG_RESPONSE, rows, lambda part: [leader, part]):
                self._send(destination, frame)

    # -- the Ready loop --

    def process_ready(self) -> None:
        """Persist, then send, then apply, then advance, until nothing is ready; then answer
        the requests forwarded by other nodes, one frame per node."""
        self._issue_reads()
        self._propose_batch()
        while self.raw.has_ready():
            ready = self.raw.ready()
            if ready.send_while_persisting:
                self._send_messages(ready)
                persist_ready(self.storage, ready)
            else:
                persist_ready(self.storage, ready)
                self._send_messages(ready)
            self._apply(ready)
            self.raw.advance(ready)
            self._serve_reads()
        self._send_answers()

    def _send_messages(self, ready: Ready) -> None:
        for message in ready.messages:
            if message.to is not None:
                self._send(message.to, encode_message(message))

    def _apply(self, ready: Ready) -> None:
        if ready.snapshot is not None and not ready.snapshot.is_empty():
            self.machine.restore(ready.snapshot.data)
        for entry in ready.committed_entries:
            if entry.index <= self.machine.applied_index:
                continue
            result = self.machine.apply_entry(entry)
            session = None if result is None else self._sessions_by_command.get(entry.data)
            if session is not None:
                self._finish_write(session, result, None)
        for state in ready.read_states:
            for request in self._reads.get(state.request_ctx, []):
                request.read_index = state.index
        self._maybe_compact()

    def _serve_reads(self) -> None:
        applied = self.machine.applied_index
        for context, batch in list(self._reads.items()):
            ready: list[_Request] = []
            remaining: list[_Request] = []
            for request in batch:
                index = request.read_index
                (ready if index is not None and index <= applied else remaining).append(request)
            if not ready:
                continue
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
        return self.raw.soft_state().role is Role.LEADER

    @property
    def pending(self) -> int:
        """Requests still waiting."""
        reads = sum(len(batch) for batch in self._reads.values()) + len(self._unsent_reads)
        return len(self._writes) + reads


def _rows_from(body: Any) -> list[Any]:
    if not isinstance(body, list):
        raise TypeError("a batch of strong requests is an array")
    return body


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


def _response_row(
    request_id: int, answer: Result | ReadAnswer | None, error: Exception | None
) -> list[Any]:
    if error is not None:
        return [request_id, "error", str(error)]
    if isinstance(answer, Result):
        return [request_id, "result", result_body(answer)]
    if answer is None:
        return [request_id, "read", None]
    return [request_id, "read", [answer.kind, [list(w) for w in answer.windows]]]


def _answers_from(body: Any) -> tuple[str | None, list[Any]]:
    leader, rows = body
    if leader is not None and not isinstance(leader, str):
        raise TypeError("the leader of a strong response is a node id or nil")
    return leader, _rows_from(rows)


def _response_from(body: Any) -> tuple[int, Result | ReadAnswer | None, Exception | None]:
    request_id, kind, payload = body
    if type(request_id) is not int:
        raise ValueError("malformed response id")
    if kind == "error":
        return request_id, None, UnavailableError(str(payload))
    if kind == "result":
        return request_id, result_from(payload), None
    if kind == "read":
        if payload is None:
            return request_id, None, None
        view_kind, windows = payload
        return request_id, KeyView(str(view_kind), tuple(tuple(w) for w in windows)), None
    raise ValueError(f"unknown response kind {kind!r}")


def _frames(tag: wire.Tag, rows: list[Any], wrap: Callable[[list[Any]], Any]) -> list[bytes]:
    """``rows`` in frames of ``tag`` (body ``wrap(rows)``), halved until each fits
    :data:`FRAME_BYTES_MAX` (a single row goes alone whatever its size)."""
    frame = wire.encode(tag, wrap(rows))
    if len(frame) <= FRAME_BYTES_MAX or len(rows) == 1:
        return [frame]
    middle = len(rows) // 2
    return _frames(tag, rows[:middle], wrap) + _frames(tag, rows[middle:], wrap)


class StrongClient:
    """Strong operations for a node outside the voter set: forwarded to voters, retried."""

    def __init__(
        self,
        voters: Sequence[str],
        rng: random.Random,
        send: Send,
        session_results_max: int = SESSION_RESULTS_MAX,
    ) -> None:
        if not voters:
            raise ValueError("a strong client needs at least one voter")
        self.voters = list(voters)
        self._rng = rng
        self._send = send
        self._tick = 0
        self._next_id = 0
        self._requests: dict[int, tuple[_Request, int]] = {}
        self._unsent: list[int] = []
        self._leader: str | None = None
        self._windows = _SessionWindows(session_results_max)
        self._held: dict[Session, int] = {}
        self.counters: dict[str, int] = dict.fromkeys(("answered", "failed", "malformed"), 0)

    def submit(self, command: Command, timeout_ticks: int, done: Completion) -> None:
        """Forward a write to a voter (held back while too far ahead of its session)."""
        request = _Request(encode_command(command), None, 0, 0, done)
        request.session = (command.client_id, command.sequence)
        request_id = self._start(request, timeout_ticks)
        if self._windows.admit(request.session):
            self._forward(request_id)
        else:
            request.held = True
            self._held[request.session] = request_id

    def read(self, key: str, timeout_ticks: int, done: Completion) -> None:
        """Forward a linearizable read to a voter."""
        request = _Request(None, key, 0, 0, done)
        self._forward(self._start(request, timeout_ticks))

    def _start(self, request: _Request, timeout_ticks: int) -> int:
        request.deadline_tick = self._tick + timeout_ticks
        request_id = self._next_id
        self._next_id += 1
        self._requests[request_id] = (request, timeout_ticks)
        return request_id

    def _forward(self, request_id: int) -> None:
        """Send at the end of this pump, with every other request of the pump."""
        self._requests[request_id][0].retry_tick = self._tick + RETRY_TICKS * 2
        self._unsent.append(request_id)

    def _finish(
        self, request_id: int, answer: Result | ReadAnswer | None, error: Exception | None
    ) -> None:
        request, _ = self._requests.pop(request_id)
        if request.session is not None:
            self._held.pop(request.session, None)
            for released in self._windows.finish(request.session):
                waiting_id = self._held.pop(released, None)
                if waiting_id is not None and waiting_id in self._requests:
                    self._requests[waiting_id][0].held = False
                    self._forward(waiting_id)
        self.counters["failed" if error is not None else "answered"] += 1
        request.done(answer, error)

    def tick(self) -> None:
        """Retry unanswered requests at another voter; fail those past their deadline."""
        self._tick += 1
        for request_id, (request, _) in list(self._requests.items()):
            if self._tick >= request.deadline_tick:
                self._finish(
                    request_id, None, UnavailableError("strong request timed out at every voter")
                )
            elif not request.held and self._tick >= request.retry_tick:
                self._leader = None  # no answer: the leader we knew may be gone
                self._forward(request_id)

    def step(self, source: str, payload: bytes) -> None:
        """Handle a voter's answers; learn the leader it names."""
        try:
            leader, rows = wire.decode_as(payload, wire.Tag.STRONG_RESPONSE, _answers_from)
        except DecodeError:
            self.counters["malformed"] += 1
            return
        if leader in self.voters:
            self._leader = leader
        elif source == self._leader:
            self._leader = None  # our leader no longer knows one
        for row in rows:
            try:
                request_id, answer, error = wire.build_checked(row, _response_from)
            except DecodeError:
                self.counters["malformed"] += 1
                continue
            entry = self._requests.get(request_id)
            if entry is None:
                continue  # answered already (a retry's duplicate)
            if error is not None and self._tick < entry[0].deadline_tick:
                self._forward(request_id)  # that voter gave up early: try another
                continue
            self._finish(request_id, answer, error)

    def process_ready(self) -> None:
        """Send this pump's requests in one frame, to the leader when it is known."""
        if not self._unsent:
            return
        unsent, self._unsent = self._unsent, []
        rows = []
        for request_id in dict.fromkeys(unsent):  # a retry may repeat an id within a pump
            entry = self._requests.get(request_id)
            if entry is None:
                continue
            request, timeout_ticks = entry
            remaining = max(1, request.deadline_tick - self._tick)
            rows.append([request_id, request.data, request.key, min(timeout_ticks, remaining)])
        if not rows:
            return
        voter = self._leader
        if voter is None:
            voter = self.voters[self._rng.randrange(len(self.voters))]
        for frame in _frames(wire.Tag.STRONG_REQUEST, rows, lambda part: part):
            self._send(voter, frame)


def voter_ids(voters: Mapping[str, str]) -> list[str]:
    """The voter ids of a ``{node_id: address}`` mapping, sorted for determinism."""
    return sorted(voters)
