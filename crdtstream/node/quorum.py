"""Quorum mode: writes acknowledged once a majority of nodes merged them, reads merged from a
majority (Akka Distributed Data's ``WriteMajority`` / ``ReadMajority`` over the same CRDTs).

A quorum write is applied locally first, like an eventual one; its delta (the cells it changed)
is then sent to every other member, each merges it and acknowledges, and the write completes
once the acknowledgements and this node make a majority of the cluster. A quorum read asks every
other member for its state of the key, merges each answer into the local store, and answers
from the local store once the answers and this node make a majority. With ``W + R > N`` a quorum
read therefore sees every write acknowledged at quorum, before gossip has spread it.

A request that cannot reach its majority before its deadline fails with
:class:`~crdtstream.errors.UnavailableError`. A failed write is *not* undone: it stays applied
where it reached and gossip still spreads it (a CRDT write cannot be withdrawn), so the error
means "not confirmed at a majority in time", as in Akka.

Pure: time comes in as ``now_ms`` arguments, frames leave through the ``send`` callback, and the
store is the only state touched. Frames (``Tag.QUORUM_*``) carry msgpack rows:
``QUORUM_WRITE [id, delta]`` -> ``QUORUM_ACK [id]``; ``QUORUM_READ [id, key]`` ->
``QUORUM_STATE [id, delta]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from crdtstream import wire
from crdtstream.errors import DecodeError, MergeError, UnavailableError
from crdtstream.window.delta import StoreDelta
from crdtstream.window.store import WindowStore

__all__ = ["QUORUM_TAGS", "RETRY_MS", "Quorum", "QuorumDone", "majority"]

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
    frame: bytes
    waiting: set[str]
    needed: int
    deadline_ms: int
    retry_ms: int
    done: QuorumDone
    confirmed: set[str] = field(default_factory=set)


class Quorum:
    """The quorum requests of one node, and its answers to other nodes' requests."""

    def __init__(self, store: WindowStore, send: Send) -> None:
        self.store = store
        self._send = send
        self._requests: dict[int, _Request] = {}
        self._next_id = 0
        self.counters: dict[str, int] = dict.fromkeys(
            ("writes_confirmed", "reads_confirmed", "timed_out", "malformed", "merge_refused"), 0
        )

    def write(
        self,
        delta: StoreDelta,
        peers: Sequence[str],
        cluster_size: int,
        now_ms: int,
        timeout_ms: int,
        done: QuorumDone,
    ) -> None:
        """Send ``delta`` (already applied here) to ``peers``; ``done`` runs once a majority of
        ``cluster_size`` nodes (this one included) holds it, or at the deadline."""
        self._start(
            wire.Tag.QUORUM_WRITE, delta.to_wire(), peers, cluster_size, now_ms, timeout_ms, done
        )

    def read(
        self,
        key: str,
        peers: Sequence[str],
        cluster_size: int,
        now_ms: int,
        timeout_ms: int,
        done: QuorumDone,
    ) -> None:
        """Merge ``key``'s state from ``peers`` into the store; ``done`` runs once a majority
        of ``cluster_size`` nodes (this one included) has been merged, or at the deadline."""
        self._start(wire.Tag.QUORUM_READ, key, peers, cluster_size, now_ms, timeout_ms, done)

    def _start(
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
        self._next_id += 1
        request_id = self._next_id
        request = _Request(
            wire.encode(tag, [request_id, payload]),
            set(peers),
            needed,
            now_ms + timeout_ms,
            now_ms + RETRY_MS,
            done,
        )
        if len(request.waiting) < needed:
            done(
                UnavailableError(
                    f"quorum not reachable: a majority of {cluster_size} nodes needs "
                    f"{needed} other members, {len(request.waiting)} known"
                )
            )
            return
        self._requests[request_id] = request
        for peer in sorted(request.waiting):
            self._send(peer, request.frame)

    def tick(self, now_ms: int) -> None:
        """Fail requests past their deadline; ask again the members that have not answered."""
        for request_id, request in list(self._requests.items()):
            if now_ms >= request.deadline_ms:
                del self._requests[request_id]
                self.counters["timed_out"] += 1
                request.done(UnavailableError(_shortfall(request, len(request.confirmed))))
            elif now_ms >= request.retry_ms:
                request.retry_ms = now_ms + RETRY_MS
                for peer in sorted(request.waiting):
                    self._send(peer, request.frame)

    def step(self, source: str, payload: bytes) -> None:
        """Handle one ``QUORUM_*`` frame from ``source``: answer a request, or count an answer."""
        try:
            tag, body = wire.decode(payload)
            request_id, content = wire.build_checked(body, _row)
            if tag == wire.Tag.QUORUM_WRITE:
                self._merge(StoreDelta.from_wire(content))
                self._send(source, wire.encode(wire.Tag.QUORUM_ACK, [request_id, None]))
            elif tag == wire.Tag.QUORUM_READ:
                state = self.store.key_state(_key(content))
                self._send(
                    source, wire.encode(wire.Tag.QUORUM_STATE, [request_id, state.to_wire()])
                )
            elif tag == wire.Tag.QUORUM_STATE:
                if self._expects(request_id, source, wire.Tag.QUORUM_READ):
                    self._merge(StoreDelta.from_wire(content))
                    self._confirm(request_id, source, "reads_confirmed")
            elif tag == wire.Tag.QUORUM_ACK:
                if self._expects(request_id, source, wire.Tag.QUORUM_WRITE):
                    self._confirm(request_id, source, "writes_confirmed")
            else:
                raise DecodeError(f"not a quorum frame: tag {tag}")
        except (DecodeError, MergeError, ValueError, TypeError, KeyError, IndexError):
            self.counters["malformed"] += 1

    def _merge(self, delta: StoreDelta) -> None:
        try:
            self.store.merge(delta)
        except MergeError:
            self.counters["merge_refused"] += 1
            raise

    def _expects(self, request_id: int, source: str, tag: int) -> bool:
        request = self._requests.get(request_id)
        return (
            request is not None
            and source in request.waiting
            and wire.peek_tag(request.frame) == tag
        )

    def _confirm(self, request_id: int, source: str, counter: str) -> None:
        request = self._requests[request_id]
        request.waiting.discard(source)
        request.confirmed.add(source)
        if len(request.confirmed) >= request.needed:
            del self._requests[request_id]
            self.counters[counter] += 1
            request.done(None)

    def fail_all(self, error: Exception) -> None:
        """Fail every outstanding request with ``error`` (the node is shutting down)."""
        requests, self._requests = self._requests, {}
        for request in requests.values():
            request.done(error)

    @property
    def outstanding(self) -> int:
        """Requests still waiting for their majority."""
        return len(self._requests)


def _row(body: Any) -> tuple[int, Any]:
    request_id, content = body
    if type(request_id) is not int:
        raise TypeError("a quorum request id must be an integer")
    return request_id, content


def _key(content: Any) -> str:
    if not isinstance(content, str):
        raise TypeError("a quorum read names its key as a string")
    return content


def _shortfall(request: _Request, confirmed: int) -> str:
    return (
        f"quorum not reached in time: {confirmed + 1} of the {request.needed + 1} nodes "
        "needed confirmed"
    )
