"""Quorum mode: writes acknowledged once a majority of nodes merged them, reads merged from a
majority (Akka Distributed Data's ``WriteMajority`` / ``ReadMajority`` over the same CRDTs).

A quorum write is applied locally first, like an eventual one; the cells it changed are then
sent to every other member, each merges them and acknowledges, and the write completes once the
acknowledgements and this node make a majority of the cluster. A quorum read asks every other
member for its state of the key, merges each answer into the local store, and answers from the
local store once the answers and this node make a majority. With ``W + R > N`` a quorum read
therefore sees every write acknowledged at quorum, before gossip has spread it.

Requests are batched like Raft's group commit: the writes (and the reads) made between two
calls of :meth:`Quorum.flush` (the node calls it once per pump, and at the end of an event-loop
turn that made requests) travel together, and one answer confirms the whole batch. A write
batch carries the store's changes since the version before its first write, cells only: the
per-window write counts that certify finality travel with gossip, so a member never takes a
window for final on a quorum frame alone. Large batches and answers are split into parts that
each merge on their own; a member confirms once every part is in.

A request that cannot reach its majority before its deadline fails with
:class:`~crdtstream.errors.UnavailableError`. A failed write is *not* undone: it stays applied
where it reached and gossip still spreads it (a CRDT write cannot be withdrawn), so the error
means "not confirmed at a majority in time", as in Akka.

A member acknowledges a write part only when it holds all of it: cells it refuses (a key it
knows with another kind) make it stay silent, so such a write cannot reach its majority.
Request ids start at a random point in each run, so an answer to a request of an earlier run
cannot confirm a new one; each answer to a read carries an answer id of its own, and only the
parts of one answer together complete it (a retry may be answered with other parts).

Pure: time comes in as ``now_ms`` arguments, frames leave through the ``send`` callback, and the
store is the only state touched. Frames carry msgpack rows: ``QUORUM_WRITE [id, part, parts,
delta]`` -> ``QUORUM_ACK [id, part]``; ``QUORUM_READ [id, [key, ...]]`` -> ``QUORUM_STATE [id,
answer, part, parts, delta]``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from crdtstream import wire
from crdtstream.engine.requests import FRAME_BYTES_MAX
from crdtstream.errors import DecodeError, MergeError, UnavailableError
from crdtstream.window.delta import StoreDelta
from crdtstream.window.store import WindowStore

__all__ = [
    "QUORUM_TAGS",
    "RETRY_MS",
    "Quorum",
    "QuorumCounters",
    "QuorumDone",
    "QuorumMessage",
    "ReadRequest",
    "StatePart",
    "WriteAck",
    "WritePart",
    "decode_quorum",
    "majority",
]

QUORUM_TAGS: Final = frozenset(
    (wire.Tag.QUORUM_WRITE, wire.Tag.QUORUM_ACK, wire.Tag.QUORUM_READ, wire.Tag.QUORUM_STATE)
)

RETRY_MS: Final = 250
"""A member that has not answered is asked again this often until the deadline."""

QuorumDone = Callable[[Exception | None], None]
"""Called once per request: ``None`` once a majority confirmed, else the error."""

Send = Callable[[str, bytes], None]


def majority(cluster_size: int) -> int:
    """Nodes that make a majority of ``cluster_size``."""
    return cluster_size // 2 + 1


@dataclass(slots=True)
class _Request:
    """One batch on the wire: its frames, the parts each member has answered, whom to tell."""

    tag: int
    frames: list[bytes]
    waiting: set[str]
    needed: int
    deadline_ms: int
    retry_ms: int
    dones: list[QuorumDone]
    confirmed: set[str] = field(default_factory=set)
    # Per member: for writes, the parts it acknowledged (under answer 0); for reads, the parts
    # received of each of its answers.
    parts_in: dict[str, dict[int, set[int]]] = field(default_factory=dict)

    def finish(self, error: Exception | None) -> None:
        for done in self.dones:
            done(error)


@dataclass(slots=True)
class _Batch:
    """Requests of one tag gathered since the last flush (they share members and deadline).
    ``payloads``: store versions before each write or keys whose state is written, or keys to
    read."""

    payloads: list[Any] = field(default_factory=list)
    dones: list[QuorumDone] = field(default_factory=list)
    peers: Sequence[str] = ()
    cluster_size: int = 1
    deadline_ms: int | None = None
    created_ms: int = 0


@dataclass(slots=True)
class QuorumCounters:
    """Quorum requests of one node and its answers to others (``quorum`` in ``/v1/status``)."""

    writes_confirmed: int = 0
    """Writes acknowledged by a majority (one per caller of a batch)."""
    reads_confirmed: int = 0
    """Reads merged from a majority (one per caller of a batch)."""
    batches_sent: int = 0
    timed_out: int = 0
    """Requests failed because their deadline passed before a majority answered."""
    malformed: int = 0
    merge_refused: int = 0
    """Peer cells not merged because the store refused their parameters."""
    writes_refused: int = 0
    """Peer writes not acknowledged because some of their cells were not held here."""


class Quorum:
    """The quorum requests of one node, and its answers to other nodes' requests."""

    def __init__(self, store: WindowStore, send: Send, first_id: int = 0) -> None:
        """``first_id``: where this run's request ids start (pick it at random per run)."""
        self.store = store
        self._send = send
        self._requests: dict[int, _Request] = {}
        self._batches: dict[int, _Batch] = {}
        self._next_id = first_id
        self._next_answer = first_id
        self.counters = QuorumCounters()

    def write(
        self,
        changes: int | str,
        peers: Sequence[str],
        cluster_size: int,
        now_ms: int,
        timeout_ms: int,
        done: QuorumDone,
    ) -> None:
        """Replicate ``changes`` to ``peers`` at the next :meth:`flush`: the store's changes
        since that version (an int: a write just applied here), or that key's whole state (a
        str: to confirm a write applied here earlier, whose request failed). ``done`` runs once
        a majority of ``cluster_size`` nodes (this one included) holds them, or at the
        deadline."""
        self._add(wire.Tag.QUORUM_WRITE, changes, peers, cluster_size, now_ms, timeout_ms, done)

    def read(
        self,
        key: str,
        peers: Sequence[str],
        cluster_size: int,
        now_ms: int,
        timeout_ms: int,
        done: QuorumDone,
    ) -> None:
        """Merge ``key``'s state from ``peers`` into the store (asked at the next
        :meth:`flush`); ``done`` runs once a majority of ``cluster_size`` nodes (this one
        included) has been merged, or at the deadline."""
        self._add(wire.Tag.QUORUM_READ, key, peers, cluster_size, now_ms, timeout_ms, done)

    def _add(
        self,
        tag: int,
        payload: Any,
        peers: Sequence[str],
        cluster_size: int,
        now_ms: int,
        timeout_ms: int,
        done: QuorumDone,
    ) -> None:
        needed = majority(cluster_size) - 1
        if needed <= 0:
            done(None)
            return
        if len(peers) < needed:
            done(
                UnavailableError(
                    f"quorum not reachable: a majority of {cluster_size} nodes needs "
                    f"{needed} other members, {len(peers)} known"
                )
            )
            return
        batch = self._batches.get(tag)
        if batch is None:
            batch = self._batches[tag] = _Batch(created_ms=now_ms)
        batch.payloads.append(payload)
        batch.dones.append(done)
        # The batch goes to the members and majority of its latest request, by the earliest
        # deadline among its requests.
        batch.peers, batch.cluster_size = peers, cluster_size
        deadline_ms = now_ms + timeout_ms
        if batch.deadline_ms is None or deadline_ms < batch.deadline_ms:
            batch.deadline_ms = deadline_ms

    def flush(self, now_ms: int) -> None:
        """Send what was asked since the last flush: one write batch, and the reads in batches
        whose key lists fit a frame, each to every member."""
        batches, self._batches = self._batches, {}
        for tag, batch in batches.items():
            if tag == wire.Tag.QUORUM_WRITE:
                versions = [p for p in batch.payloads if isinstance(p, int)]
                parts = [self.store.key_state(p) for p in batch.payloads if isinstance(p, str)]
                if versions:
                    parts.append(self.store.delta_since(min(versions)))
                joined = parts[0] if len(parts) == 1 else StoreDelta.join_all(parts)
                delta = _cells_only(joined)
                self._start(batch, batch.dones, functools.partial(_write_frames, delta))
                continue
            for keys, dones in _read_chunks(batch):
                self._start(batch, dones, functools.partial(_read_frames, keys))

    def _start(
        self,
        batch: _Batch,
        dones: list[QuorumDone],
        frames_for: Callable[[int], tuple[int, list[bytes]]],
    ) -> None:
        """Send one request: ``frames_for(request id)`` gives its tag and frames."""
        request_id = self._next_id + 1
        try:
            tag, frames = frames_for(request_id)
        except ValueError as error:  # a single cell too large for any frame
            for done in dones:
                done(UnavailableError(f"quorum request cannot be sent: {error}"))
            return
        self._next_id = request_id
        assert batch.deadline_ms is not None, "a batch holds at least one request"
        request = _Request(
            tag,
            frames,
            set(batch.peers),
            majority(batch.cluster_size) - 1,
            batch.deadline_ms,
            min(batch.deadline_ms, batch.created_ms + RETRY_MS),
            dones,
        )
        self._requests[request_id] = request
        self.counters.batches_sent += 1
        self._send_request(request)

    def _send_request(self, request: _Request) -> None:
        for peer in sorted(request.waiting):
            acknowledged = request.parts_in.get(peer, {}).get(0, set())
            for index, frame in enumerate(request.frames):
                if request.tag == wire.Tag.QUORUM_READ or index not in acknowledged:
                    self._send(peer, frame)

    def tick(self, now_ms: int) -> None:
        """Fail requests past their deadline; ask again the members that have not answered."""
        for request_id, request in list(self._requests.items()):
            if now_ms >= request.deadline_ms:
                del self._requests[request_id]
                self.counters.timed_out += 1
                request.finish(UnavailableError(_shortfall(request)))
            elif now_ms >= request.retry_ms:
                request.retry_ms = now_ms + RETRY_MS
                self._send_request(request)

    def step(self, source: str, payload: bytes) -> None:
        """Handle one ``QUORUM_*`` frame from ``source``: answer a request, or count an answer.

        A frame is malformed or not as soon as it is decoded (:func:`decode_quorum`, which
        raises :class:`~crdtstream.errors.DecodeError` only): such a frame is counted and
        dropped. The handling that follows runs outside any ``except`` but the one for a
        store that refuses a peer's parameters, so a bug in it raises.
        """
        try:
            message = decode_quorum(payload)
        except DecodeError:
            self.counters.malformed += 1
            return
        if isinstance(message, WritePart):
            refused_before = self.store.merge_rejected_cells
            if not self._merge(message.delta):
                return
            if self.store.merge_rejected_cells > refused_before:
                self.counters.writes_refused += 1  # not held here: no acknowledgement
                return
            ack = wire.encode(wire.Tag.QUORUM_ACK, [message.request_id, message.index])
            self._send(source, ack)
        elif isinstance(message, ReadRequest):
            state = StoreDelta.join_all([self.store.key_state(key) for key in message.keys])
            self._next_answer += 1
            for frame in _part_frames(
                wire.Tag.QUORUM_STATE, message.request_id, state, answer=self._next_answer
            ):
                self._send(source, frame)
        elif isinstance(message, StatePart):
            request_id = message.request_id
            if self._expects(request_id, source, wire.Tag.QUORUM_READ) and self._merge(
                message.delta
            ):
                self._part_in(request_id, source, message.answer, message.index, message.count)
        else:
            request = self._requests.get(message.request_id)
            if request is None or not self._expects(
                message.request_id, source, wire.Tag.QUORUM_WRITE
            ):
                return  # an answer to a request that finished, or not to this node's
            if message.index >= len(request.frames):
                self.counters.malformed += 1  # acknowledges a part this request lacks
                return
            self._part_in(message.request_id, source, 0, message.index, len(request.frames))

    def _merge(self, delta: StoreDelta) -> bool:
        """Merge a peer's cells; False (nothing applied) when the store refuses its parameters."""
        try:
            self.store.merge(delta)
        except MergeError:
            self.counters.merge_refused += 1
            return False
        return True

    def _expects(self, request_id: int, source: str, tag: int) -> bool:
        request = self._requests.get(request_id)
        return request is not None and source in request.waiting and request.tag == tag

    def _part_in(self, request_id: int, source: str, answer: int, index: int, count: int) -> None:
        request = self._requests[request_id]
        parts = request.parts_in.setdefault(source, {}).setdefault(answer, set())
        parts.add(index)
        if len(parts) < count:
            return
        request.waiting.discard(source)
        request.confirmed.add(source)
        if len(request.confirmed) >= request.needed:
            del self._requests[request_id]
            written = request.tag == wire.Tag.QUORUM_WRITE
            if written:
                self.counters.writes_confirmed += len(request.dones)
            else:
                self.counters.reads_confirmed += len(request.dones)
            request.finish(None)

    def fail_all(self, error: Exception) -> None:
        """Fail every outstanding request with ``error`` (the node is shutting down)."""
        requests, self._requests = self._requests, {}
        batches, self._batches = self._batches, {}
        for request in requests.values():
            request.finish(error)
        for batch in batches.values():
            for done in batch.dones:
                done(error)

    @property
    def outstanding(self) -> int:
        """Requests sent or to be sent that still wait for their majority."""
        waiting = sum(len(request.dones) for request in self._requests.values())
        return waiting + sum(len(batch.dones) for batch in self._batches.values())


def _cells_only(delta: StoreDelta) -> StoreDelta:
    """``delta`` without its per-window write counts (those travel with gossip)."""
    return StoreDelta(
        delta.distinct_precision, delta.relative_accuracy, delta.keys, delta.replicas, delta.cells
    ).compacted()


def _part_frames(
    tag: int, request_id: int, delta: StoreDelta, *, answer: int | None = None
) -> list[bytes]:
    """``delta`` as one or more frames ``[id, (answer,) part, parts, delta]`` under the frame
    budget."""
    parts = delta.split(FRAME_BYTES_MAX)
    head = [request_id] if answer is None else [request_id, answer]
    return [
        wire.encode(tag, [*head, index, len(parts), part.to_wire()])
        for index, part in enumerate(parts)
    ]


def _write_frames(delta: StoreDelta, request_id: int) -> tuple[int, list[bytes]]:
    return wire.Tag.QUORUM_WRITE, _part_frames(wire.Tag.QUORUM_WRITE, request_id, delta)


def _read_frames(keys: list[str], request_id: int) -> tuple[int, list[bytes]]:
    return wire.Tag.QUORUM_READ, [wire.encode(wire.Tag.QUORUM_READ, [request_id, keys])]


def _read_chunks(batch: _Batch) -> list[tuple[list[str], list[QuorumDone]]]:
    """The reads of a batch in chunks whose key lists fit in a frame: (distinct keys, dones)."""
    chunks: list[tuple[list[str], list[QuorumDone]]] = []
    keys: dict[str, None] = {}
    dones: list[QuorumDone] = []
    size = 0
    for key, done in zip(batch.payloads, batch.dones, strict=True):
        if key not in keys and keys and size + len(key) + 8 > FRAME_BYTES_MAX // 2:
            chunks.append((list(keys), dones))
            keys, dones, size = {}, [], 0
        if key not in keys:
            keys[key] = None
            size += len(key.encode()) + 8
        dones.append(done)
    if dones:
        chunks.append((list(keys), dones))
    return chunks


@dataclass(frozen=True, slots=True)
class WritePart:
    """``QUORUM_WRITE``: part ``index`` of ``count`` of a write batch."""

    request_id: int
    index: int
    count: int
    delta: StoreDelta


@dataclass(frozen=True, slots=True)
class WriteAck:
    """``QUORUM_ACK``: the member holds part ``index`` of the write batch."""

    request_id: int
    index: int


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """``QUORUM_READ``: the member's state of ``keys`` is asked for (distinct, non-empty)."""

    request_id: int
    keys: list[str]


@dataclass(frozen=True, slots=True)
class StatePart:
    """``QUORUM_STATE``: part ``index`` of ``count`` of the member's answer ``answer``."""

    request_id: int
    answer: int
    index: int
    count: int
    delta: StoreDelta


QuorumMessage = WritePart | WriteAck | ReadRequest | StatePart
"""A decoded and checked quorum frame."""


def decode_quorum(payload: bytes) -> QuorumMessage:
    """Decode and check one ``QUORUM_*`` frame; raise :class:`DecodeError` and nothing else
    for another tag or a malformed body (the cells' decoding included)."""
    tag, body = wire.decode(payload)
    if tag == wire.Tag.QUORUM_WRITE:
        request_id, index, count, content = _part_row(_fields(body, 4, "quorum write"))
        return WritePart(request_id, index, count, _store_delta(content))
    if tag == wire.Tag.QUORUM_ACK:
        request_id, index = _fields(body, 2, "quorum acknowledgement")
        return WriteAck(_integer(request_id, "request id"), _natural(index, "acked part"))
    if tag == wire.Tag.QUORUM_READ:
        request_id, keys = _fields(body, 2, "quorum read")
        if not isinstance(keys, list) or not keys:
            raise DecodeError("a quorum read names its keys as a non-empty list")
        if not all(type(key) is str for key in keys):
            raise DecodeError("a quorum read names its keys as strings")
        return ReadRequest(_integer(request_id, "request id"), list(dict.fromkeys(keys)))
    if tag == wire.Tag.QUORUM_STATE:
        request_id, answer, index, count, content = _fields(body, 5, "quorum state")
        request_id, index, count, content = _part_row([request_id, index, count, content])
        return StatePart(
            request_id, _integer(answer, "answer id"), index, count, _store_delta(content)
        )
    raise DecodeError(f"not a quorum frame: tag {tag}")


def _fields(body: Any, count: int, what: str) -> list[Any]:
    if not isinstance(body, list) or len(body) != count:
        raise DecodeError(f"a {what} is an array of {count} fields")
    return body


def _integer(value: Any, what: str) -> int:
    if type(value) is not int:
        raise DecodeError(f"a quorum {what} must be an integer, got {value!r}")
    return value


def _natural(value: Any, what: str) -> int:
    if _integer(value, what) < 0:
        raise DecodeError(f"a quorum {what} must be >= 0, got {value!r}")
    return int(value)


def _part_row(body: list[Any]) -> tuple[int, int, int, Any]:
    request_id, index, count, content = body
    index, count = _natural(index, "part"), _natural(count, "part count")
    if not index < count:
        raise DecodeError("a quorum part needs 0 <= part < parts")
    return _integer(request_id, "request id"), index, count, content


def _store_delta(content: Any) -> StoreDelta:
    return wire.build_checked(content, StoreDelta.from_wire)


def _shortfall(request: _Request) -> str:
    return (
        f"quorum not reached in time: {len(request.confirmed) + 1} of the "
        f"{request.needed + 1} nodes needed confirmed"
    )
