"""The transport seam: one endpoint of a best-effort, bytes-only, non-blocking packet network.

The core (gossip, membership, Raft, catalog sync) is written against :class:`Transport`; the
implementations live in ``transports/`` (``memory`` — a seeded simulated network driven by a
manual clock — and ``zeromq``). The driver and the tests wire them together; the core never
imports an implementation.

The contract every implementation honours (and ``tests/transports/`` checks):

Best effort
    A packet handed to :meth:`Transport.send` may be lost, delivered more than once, or
    delivered out of order relative to other packets, also between the same two endpoints.
    Nothing is acknowledged. CRDT merges are idempotent and Raft retries, so neither needs more.
    A packet that *is* delivered arrives byte for byte as sent, tagged with the sender's id.

Never blocks
    No method waits on the network or on a peer. :meth:`Transport.send` only enqueues;
    :meth:`Transport.receive` only drains what has already arrived. The one way to wait is
    :meth:`Transport.wait_readable`, an ``async`` method with a timeout, so an asyncio driver
    sleeps without a busy loop, while a step-by-step simulation calls ``receive`` after each
    step of its network and never awaits.

Bounded queues
    Each endpoint holds at most ``TransportConfig.send_queue_messages`` outgoing packets per
    peer that are not yet on their way, and at most ``receive_queue_messages`` arrived packets
    that ``receive`` has not returned yet. When the outgoing queue is full, ``send`` drops the
    packet, returns ``False`` and counts it in ``dropped_full``; a slow or dead peer therefore
    costs a bounded amount of memory and never stalls the sender. When the incoming side is
    full the newest packets are dropped (counted in ``dropped_receive_full`` where the
    implementation can observe it; ZeroMQ instead pushes back on the sender over TCP).

Payload size
    ``send`` raises :class:`PayloadTooLargeError` for a payload over ``max_payload_bytes``: that
    is the caller's bug, so it is loud. An incoming payload over the receiver's own limit (a
    peer with a larger limit, or a hostile one) is dropped and counted in ``dropped_oversize``.

Peers
    A peer is a node id plus an address the implementation understands (``tcp://h:p`` or
    ``ipc://path`` for ZeroMQ, any string for the simulated network, conventionally
    ``memory://<node id>``). ``send`` only goes to peers added with :meth:`Transport.add_peer`;
    ``receive`` returns packets from any source the implementation lets in (with CurveZMQ only
    sources whose public key is on the allow-list), so a node can hear a newcomer that it has
    not added yet; the membership layer decides what to do with it.

Close
    :meth:`Transport.close` is idempotent. It discards queued outgoing and unread incoming
    packets, releases every socket, and returns without waiting for the network. After it,
    ``send``, ``receive``, ``add_peer`` and ``wait_readable`` raise
    :class:`TransportClosedError`; ``remove_peer``, ``stats`` and ``close`` keep working.

Errors by method (the transport errors all derive from :class:`~crdtstream.errors.TransportError`)
    ``add_peer``: :class:`TransportClosedError`; :class:`TransportError` for an address the
    implementation cannot use or (with CurveZMQ) a peer without a known public key;
    ``ValueError`` for an invalid node id.
    ``send``: :class:`PeerUnknownError` (peer never added, or removed; also counted in
    ``rejected_unknown_peer``), :class:`PayloadTooLargeError`, :class:`TransportClosedError`,
    and :class:`TransportError` only for a failure of the machinery itself. A full queue or a
    dead peer is *not* an error: ``send`` returns ``False`` or the packet is simply lost.
    ``receive``: :class:`TransportClosedError`; ``ValueError`` if ``max_packets < 1``.
    ``wait_readable``: :class:`TransportClosedError`, also when the endpoint is closed while
    waiting; one waiter at a time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from crdtstream.errors import PayloadTooLargeError, PeerUnknownError, TransportClosedError

__all__ = [
    "Packet",
    "PayloadTooLargeError",
    "PeerUnknownError",
    "Transport",
    "TransportClosedError",
    "TransportStats",
]


class Packet(NamedTuple):
    """One received packet: who sent it and the bytes, exactly as they were sent.

    A named tuple rather than a frozen dataclass: one is built per received message, and a
    tuple is built in half the time.
    """

    source_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class TransportStats:
    """A snapshot of one endpoint's counters, all monotonically increasing since it was opened.

    ``sent``: packets ``send`` accepted (returned ``True``); accepted is not delivered.
    ``dropped_full``: packets ``send`` refused because the peer's outgoing queue was full.
    ``rejected_unknown_peer``: ``send`` calls naming a peer that was never added (raised).
    ``rejected_oversize``: ``send`` calls over ``max_payload_bytes`` (raised).
    ``received``: packets returned by ``receive``.
    ``dropped_receive_full``: arrived packets dropped because the receive queue was full.
    ``dropped_oversize``: arrived packets over this endpoint's ``max_payload_bytes``.
    ``dropped_malformed``: arrived frames that do not follow the transport's framing.
    ``rejected_unauthenticated``: connection or packet attempts refused by authentication.
    """

    sent: int = 0
    dropped_full: int = 0
    rejected_unknown_peer: int = 0
    rejected_oversize: int = 0
    received: int = 0
    dropped_receive_full: int = 0
    dropped_oversize: int = 0
    dropped_malformed: int = 0
    rejected_unauthenticated: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name, for status pages and metrics."""
        return asdict(self)


@runtime_checkable
class Transport(Protocol):
    """One endpoint of a best-effort packet network; the module docstring is the contract."""

    @property
    def node_id(self) -> str:
        """This endpoint's node id: the ``source_id`` its packets carry at the receiver."""
        ...

    @property
    def max_payload_bytes(self) -> int:
        """The largest payload ``send`` accepts and ``receive`` lets through."""
        ...

    def add_peer(self, peer_id: str, address: str) -> None:
        """Make ``peer_id`` reachable at ``address``; adding a known id again moves it there."""
        ...

    def remove_peer(self, peer_id: str) -> None:
        """Forget ``peer_id`` and discard packets still queued for it; unknown ids are ignored."""
        ...

    def send(self, peer_id: str, payload: bytes) -> bool:
        """Enqueue ``payload`` for ``peer_id`` without blocking.

        Returns ``False`` (and counts ``dropped_full``) when the peer's queue is full. ``True``
        means accepted, not delivered.
        """
        ...

    def receive(self, max_packets: int) -> list[Packet]:
        """Return up to ``max_packets`` packets that have arrived, oldest first; never waits."""
        ...

    async def wait_readable(self, timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms`` until ``receive`` has something; return whether it has.

        A ``True`` may rarely be spurious (for instance when the only arrival was a malformed
        frame that ``receive`` then drops), so callers loop as usual.
        """
        ...

    def stats(self) -> TransportStats:
        """A snapshot of this endpoint's counters."""
        ...

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        ...

    def close(self) -> None:
        """Release everything; idempotent; queued and unread packets are discarded."""
        ...
