"""Strong mode in the engine: one Raft replica (or a client of one) inside a node.

Rules of this file: it performs the driver's duties for Raft (the storage it writes is
injected, so the file itself stays pure) and nothing else — persist, then
send, then apply, then advance (etcd-io/raft ``node.go``), retry what the network may have lost,
and fail what cannot finish by its deadline. The protocol itself is :class:`RawNode`'s.

Requests complete through callbacks, so the same code serves a step-by-step simulation (which
records completions in a history) and the asyncio node (which resolves futures). A request
either completes with a :class:`Result` (a write applied exactly once thanks to its
``(client_id, sequence)`` session, or a linearizable read) or fails with
:class:`~crdtstream.errors.UnavailableError` at its deadline — a failed write may still have
been applied, as in any replicated system; retrying it with the same sequence is safe.

A node outside the voter set runs a :class:`~crdtstream.engine.strong_client.StrongClient`: it
forwards requests to a voter (``STRONG_REQUEST``), which runs them as its own and answers
(``STRONG_RESPONSE``); the client retries other voters until the deadline.

Everything is batched per pump (one call of ``process_ready``), so the cost per request falls
as the load rises: a replica proposes all writes of a pump in one step (a follower forwards them
in one message), a client sends all requests of a pump to one voter in one frame, and a voter
answers each peer with one frame. Each answer names the voter's known leader, so a client sends
straight to the leader once it knows it. A leader sends its appends before it writes its own
log when the Ready allows it (``Ready.send_while_persisting``), so the followers' fsyncs run
during its own.

The per-session window that keeps retries deduplicable is in :mod:`crdtstream.engine.requests`.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crdtstream import wire
from crdtstream.config import RaftConfig, WindowConfig
from crdtstream.engine.requests import (
    RETRY_TICKS,
    Completion,
    ReadAnswer,
    Request,
    Send,
    Session,
    SessionWindows,
    both,
    forwarded_from,
    frames,
    response_row,
    rows_from,
)
from crdtstream.errors import (
    ConfigError,
    DecodeError,
    ProtocolViolationError,
    UnavailableError,
)
from crdtstream.raft.rawnode import RawNode, Status, refusal
from crdtstream.raft.state_machine import (
    Command,
    Result,
    StateMachine,
    decode_command,
    encode_command,
)
from crdtstream.raft.storage import DurableStorage, persist_ready
from crdtstream.raft.types import Message, Ready, Role, decode_message, encode_message

__all__ = ["Completion", "ReadAnswer", "StrongCounters", "StrongReplica"]


@dataclass(frozen=True, slots=True)
class _Forwarded:
    """A request forwarded by a strong client, decoded and checked."""

    request_id: int
    command: Command | None
    key: str | None
    timeout_ticks: int


def _checked_command(command: Command) -> Command:
    """``command`` if its text fields are text; :class:`DecodeError` otherwise (the session
    ``(client_id, sequence)`` becomes a table key, so a list there would break it)."""
    if not all(type(text) is str for text in (command.client_id, command.key)):
        raise DecodeError("a command's client id and key must be strings")
    return command


@dataclass(slots=True)
class StrongCounters:
    """Strong requests of one Raft voter (beside its role and indexes in ``raft`` status)."""

    writes_ok: int = 0
    writes_failed: int = 0
    reads_ok: int = 0
    reads_failed: int = 0
    malformed: int = 0
    retries: int = 0
    """Writes proposed again because they stayed quiet past their retry tick."""


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
        send_now: Callable[[], None] | None = None,
    ) -> None:
        """``send`` queues a frame; ``send_now``, when given, has the driver send what is
        queued at once (called before a leader writes its log, so that its appends travel
        during its fsync)."""
        self.node_id = node_id
        self.storage = storage
        self.machine = StateMachine(window)
        snapshot = storage.snapshot()
        if not snapshot.is_empty():
            self.machine.restore(snapshot.data)
        self.raw = RawNode(node_id, storage, raft, rng, applied=self.machine.applied_index)
        self.raft_config = raft
        self._send = send
        self._send_now = send_now
        self._tick = 0
        self._writes: dict[Session, Request] = {}
        self._sessions_by_command: dict[bytes, Session] = {}
        self._windows = SessionWindows(self.machine.session_results_max)
        self._unproposed: list[bytes] = []
        self._reads: dict[bytes, list[Request]] = {}
        self._unsent_reads: list[Request] = []
        self._next_read_context = 0
        self._answers: dict[str, list[list[Any]]] = {}
        self.watch: tuple[bytes, Callable[[bytes], None]] | None = None
        """``(marker, callback)``: every applied command whose encoding contains ``marker`` is
        handed to ``callback`` too, in the log's order (the same order on every voter)."""
        self.on_restore: Callable[[], None] | None = None
        """Called after the state machine was replaced by a snapshot from the leader (the
        commands it covers are never applied here one by one)."""
        self.counters = StrongCounters()

    # -- requests --

    def submit(self, command: Command, timeout_ticks: int, done: Completion) -> None:
        """Propose ``command``; ``done`` runs once it is applied here or its deadline passes."""
        session = (command.client_id, command.sequence)
        previous = self._writes.get(session)
        if previous is not None:  # the same request again: keep one, answer both
            previous.done = both(previous.done, done)
            return
        data = encode_command(command)
        request = Request(data, None, self._tick + timeout_ticks, self._tick, done)
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
        request = Request(None, key, self._tick + timeout_ticks, self._tick, done)
        self._unsent_reads.append(request)

    def _propose(self, request: Request) -> None:
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

    def fail_all(self, error: Exception) -> None:
        """Fail every outstanding request with ``error`` (the node is shutting down).

        A write failed here may still commit later elsewhere; as for any timeout, its outcome
        is unknown to the caller, and a retry in the same session is safe.
        """
        for session in list(self._writes):
            if session in self._writes:
                self._finish_write(session, None, error)
        reads = self._unsent_reads + [r for batch in self._reads.values() for r in batch]
        self._unsent_reads, self._reads = [], {}
        for request in reads:
            self.counters.reads_failed += 1
            request.done(None, error)

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
        if error is None:
            self.counters.writes_ok += 1
        else:
            self.counters.writes_failed += 1
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
                self.counters.retries += 1
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
            self.counters.reads_failed += 1
            request.done(None, UnavailableError(self._unavailable_reason("read")))

    def _unavailable_reason(self, what: str) -> str:
        status = self.raw.status()
        leader = status.leader or "none known"
        return f"strong {what} timed out: no quorum reached (leader: {leader}, term {status.term})"

    def step(self, source: str, payload: bytes) -> None:
        """Handle one Raft or forwarded-request frame; malformed frames are counted, ignored.

        A frame is judged while it is decoded (:class:`DecodeError`) and checked against what
        a correct peer sends (:func:`~crdtstream.raft.rawnode.refusal`, the sender being the
        transport's peer); what follows runs outside any ``except`` but the one for
        :class:`ProtocolViolationError` (an append against committed entries, found only
        against the log), so a bug raises.
        """
        try:
            tag = wire.peek_tag(payload)
            if tag == wire.Tag.RAFT_MESSAGE:
                message = decode_message(payload)
                self._check_snapshot(message)
            elif tag == wire.Tag.STRONG_REQUEST:
                requests = self._decode_forwarded(payload)
            else:
                raise DecodeError(f"tag {tag} is neither a Raft message nor a strong request")
        except DecodeError:
            self.counters.malformed += 1
            return
        if tag == wire.Tag.STRONG_REQUEST:
            self._serve_forwarded(source, requests)
            return
        if message.sender != source or refusal(message, self.node_id) is not None:
            self.counters.malformed += 1
            return
        try:
            self.raw.step(message)
        except ProtocolViolationError:
            self.counters.malformed += 1

    def _check_snapshot(self, message: Message) -> None:
        """Raise :class:`DecodeError` unless a snapshot the message carries restores here: once
        stepped, it would be stored and applied, and fail only then."""
        snapshot = message.snapshot
        if snapshot is None or snapshot.is_empty():
            return
        scratch = StateMachine(
            self.machine.window,
            session_results_max=self.machine.session_results_max,
            sessions_max=self.machine.sessions_max,
        )
        try:
            scratch.restore(snapshot.data)
        except ConfigError as error:  # taken with other windows: not a snapshot for us
            raise DecodeError(f"snapshot refused: {error}") from error

    def _decode_forwarded(self, payload: bytes) -> list[_Forwarded]:
        """The requests of a ``STRONG_REQUEST`` frame; a bad request is counted and left out
        (the others in its frame are served), a bad frame raises :class:`DecodeError`."""
        rows = wire.decode_as(payload, wire.Tag.STRONG_REQUEST, rows_from)
        requests = []
        for row in rows:
            try:
                request_id, data, key, timeout_ticks = wire.build_checked(row, forwarded_from)
                command = None if data is None else _checked_command(decode_command(data))
            except DecodeError:
                self.counters.malformed += 1
                continue
            requests.append(_Forwarded(request_id, command, key, timeout_ticks))
        return requests

    def _serve_forwarded(self, source: str, requests: list[_Forwarded]) -> None:
        for request in requests:
            answer = self._answer_to(source, request.request_id)
            if request.command is not None:
                self.submit(request.command, request.timeout_ticks, answer)
            else:
                assert request.key is not None
                self.read(request.key, request.timeout_ticks, answer)

    def _answer_to(self, source: str, request_id: int) -> Completion:
        def answer(result: Result | ReadAnswer | None, error: Exception | None) -> None:
            row = response_row(request_id, result, error)
            self._answers.setdefault(source, []).append(row)

        return answer

    def _send_answers(self) -> None:
        if not self._answers:
            return
        answers, self._answers = self._answers, {}
        leader = self.raw.soft_state().leader
        for destination, rows in answers.items():
            for frame in frames(wire.Tag.STRONG_RESPONSE, rows, lambda part: [leader, part]):
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
                if self._send_now is not None:
                    self._send_now()
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
            if self.on_restore is not None:
                self.on_restore()
        for entry in ready.committed_entries:
            if entry.index <= self.machine.applied_index:
                continue
            result = self.machine.apply_entry(entry)
            if self.watch is not None and result is not None and result.ok:
                marker, callback = self.watch
                if marker in entry.data:
                    callback(entry.data)
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
            ready: list[Request] = []
            remaining: list[Request] = []
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
                self.counters.reads_ok += 1
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
