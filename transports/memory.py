"""A seeded, simulated packet network with a manual clock, for tests and simulations.

:class:`MemoryNetwork` hands out :class:`MemoryTransport` endpoints. Nothing moves until the
test moves time with :meth:`MemoryNetwork.advance` (or :meth:`MemoryNetwork.run_until_idle`):
``send`` only schedules a packet, ``advance`` delivers every packet whose time has come, in time
order, into the receivers' queues. Every random choice (loss, duplication, delay, reordering)
comes from one ``random.Random(seed)`` drawn in send order, so the same seed and the same calls
give the same delivery trace. Payloads stay ``bytes`` end to end, so simulations exercise the
real codec.

Faults are one frozen :class:`FaultOptions` value, swapped during a run with
:meth:`MemoryNetwork.set_faults` (partition, then heal). Loss, duplication, delay and reordering
are decided when a packet is sent; partitions, one-way blocks and clogs are checked when it is
due, so a partition also catches packets already in flight, as a cut cable would.

Costs: ``send`` is O(log p) for p packets in flight; ``advance`` is O(k log p) for k packets due,
and O(1) when nothing is due, whatever the number of nodes.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from crdtstream.config import TransportConfig, require
from crdtstream.errors import (
    PayloadTooLargeError,
    PeerUnknownError,
    TransportClosedError,
    TransportError,
)
from crdtstream.ids import validate_node_id
from crdtstream.transport import Packet, TransportStats

__all__ = [
    "FaultOptions",
    "MemoryNetwork",
    "MemoryTransport",
    "NetworkStats",
    "TraceEntry",
    "memory_address",
]

Link = tuple[str, str]
"""(source node id, destination node id)."""


def memory_address(node_id: str) -> str:
    """The conventional address of ``node_id`` on a :class:`MemoryNetwork`."""
    return f"memory://{node_id}"


def _check_probability(value: float, name: str) -> None:
    require(0.0 <= value <= 1.0, f"faults.{name}", "must be in [0, 1]", value)


@dataclass(frozen=True, slots=True)
class FaultOptions:
    """What the simulated network does wrong; swap it during a run with ``set_faults``.

    ``drop_probability``: a sent packet is lost. ``duplicate_probability``: a second copy is
    scheduled with its own delay. ``delay_ms_min``/``delay_ms_max``: each copy's delay is drawn
    uniformly from this range. ``reorder_probability``: a copy is held back a further
    1..``reorder_delay_ms_max`` ms so that later packets overtake it.
    ``partition_groups``: when non-empty, packets pass only between nodes of the same group;
    nodes named in no group form one more group together (so ``isolated("a")`` cuts ``a`` off
    from everyone). ``blocked_links``: one-way cuts, as (source, destination) pairs.
    ``clogged_links``: packets on these one-way links are held, not lost, and released in order
    once the link is unclogged.
    """

    drop_probability: float = 0.0
    duplicate_probability: float = 0.0
    reorder_probability: float = 0.0
    reorder_delay_ms_max: int = 10
    delay_ms_min: int = 0
    delay_ms_max: int = 0
    partition_groups: tuple[frozenset[str], ...] = ()
    blocked_links: frozenset[Link] = frozenset()
    clogged_links: frozenset[Link] = frozenset()
    _group_of: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        _check_probability(self.drop_probability, "drop_probability")
        _check_probability(self.duplicate_probability, "duplicate_probability")
        _check_probability(self.reorder_probability, "reorder_probability")
        require(
            self.reorder_delay_ms_max >= 1,
            "faults.reorder_delay_ms_max",
            "must be >= 1",
            self.reorder_delay_ms_max,
        )
        require(
            0 <= self.delay_ms_min <= self.delay_ms_max,
            "faults.delay_ms_min",
            "must be >= 0 and <= delay_ms_max",
            self.delay_ms_min,
        )
        group_of: dict[str, int] = {}
        for index, group in enumerate(self.partition_groups):
            for node_id in group:
                require(
                    node_id not in group_of,
                    "faults.partition_groups",
                    "a node may be in one group only",
                    node_id,
                )
                group_of[node_id] = index
        object.__setattr__(self, "_group_of", group_of)

    def can_pass(self, source_id: str, destination_id: str) -> bool:
        """Whether partitions and one-way blocks let a packet from source to destination."""
        if self.partition_groups:
            rest = len(self.partition_groups)
            if self._group_of.get(source_id, rest) != self._group_of.get(destination_id, rest):
                return False
        return (source_id, destination_id) not in self.blocked_links

    def partitioned(self, *groups: Iterable[str]) -> FaultOptions:
        """These options with the network split into ``groups`` (replacing any partition)."""
        return replace(self, partition_groups=tuple(frozenset(group) for group in groups))

    def isolated(self, node_id: str) -> FaultOptions:
        """These options with ``node_id`` cut off from every other node, both ways."""
        return self.partitioned([node_id])

    def blocked(self, source_id: str, destination_id: str) -> FaultOptions:
        """These options with the one-way link source -> destination cut."""
        return replace(self, blocked_links=self.blocked_links | {(source_id, destination_id)})

    def clogged(self, source_id: str, destination_id: str) -> FaultOptions:
        """These options with the one-way link source -> destination clogged (held, not lost)."""
        return replace(self, clogged_links=self.clogged_links | {(source_id, destination_id)})

    def healed(self) -> FaultOptions:
        """These options without partitions, blocks or clogs; probabilities and delays stay."""
        return replace(
            self, partition_groups=(), blocked_links=frozenset(), clogged_links=frozenset()
        )


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One event in a packet's life: ``sent``, ``dropped``, ``duplicated``, ``delivered``,
    ``cut`` (partition or block), ``no_endpoint`` or ``clogged``."""

    time_ms: int
    source_id: str
    destination: str
    event: str
    payload: bytes


@dataclass(slots=True)
class NetworkStats:
    """What the network did to the packets it was given, since it was created
    (:meth:`MemoryNetwork.stats` hands out a copy)."""

    scheduled: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    cut: int = 0
    no_endpoint: int = 0
    clogged: int = 0


@dataclass(slots=True)
class _Counters:
    sent: int = 0
    dropped_full: int = 0
    rejected_unknown_peer: int = 0
    rejected_oversize: int = 0
    received: int = 0
    dropped_receive_full: int = 0
    dropped_oversize: int = 0

    def snapshot(self) -> TransportStats:
        return TransportStats(
            sent=self.sent,
            dropped_full=self.dropped_full,
            rejected_unknown_peer=self.rejected_unknown_peer,
            rejected_oversize=self.rejected_oversize,
            received=self.received,
            dropped_receive_full=self.dropped_receive_full,
            dropped_oversize=self.dropped_oversize,
        )


# A scheduled copy: (due_ms, sequence, source node id, destination address, payload).
_Flight = tuple[int, int, str, str, bytes]


class MemoryNetwork:
    """A simulated network: hands out endpoints and moves packets when time is advanced.

    ``seed`` fixes every random choice; ``trace=True`` records a :class:`TraceEntry` per packet
    event in :attr:`trace`, for determinism tests (it keeps every payload, so leave it off in
    long simulations).
    """

    def __init__(
        self,
        seed: int,
        faults: FaultOptions | None = None,
        *,
        trace: bool = False,
        start_ms: int = 0,
    ) -> None:
        self.seed = seed
        self._random = random.Random(seed)
        self._faults = faults if faults is not None else FaultOptions()
        self._now_ms = start_ms
        self._sequence = 0
        self._in_flight: list[_Flight] = []
        self._queued_by_link: dict[tuple[str, str], int] = {}
        self._held: dict[Link, deque[_Flight]] = {}
        self._endpoints: dict[str, MemoryTransport] = {}
        self._counts = NetworkStats()
        self.trace: list[TraceEntry] | None = [] if trace else None

    @property
    def now_ms(self) -> int:
        """The manual clock of the network."""
        return self._now_ms

    @property
    def faults(self) -> FaultOptions:
        """The faults in force."""
        return self._faults

    @property
    def in_flight(self) -> int:
        """Packets scheduled or held by a clog and not yet delivered or lost."""
        return len(self._in_flight) + sum(len(held) for held in self._held.values())

    def stats(self) -> NetworkStats:
        """A snapshot of what the network did to the packets it was given."""
        return replace(self._counts)

    def endpoint(
        self, node_id: str, config: TransportConfig | None = None, address: str | None = None
    ) -> MemoryTransport:
        """Open an endpoint for ``node_id`` at ``address`` (default ``memory://<node_id>``).

        Raises :class:`TransportError` if an open endpoint already has that address; a closed
        one's address can be reused (a restarted node).
        """
        validate_node_id(node_id)
        address = address if address is not None else memory_address(node_id)
        if address in self._endpoints:
            raise TransportError(f"address {address!r} is already in use")
        endpoint = MemoryTransport(self, node_id, address, config or TransportConfig())
        self._endpoints[address] = endpoint
        return endpoint

    def set_faults(self, faults: FaultOptions) -> None:
        """Swap the faults; packets held on links that are no longer clogged are released."""
        self._faults = faults
        for link in [link for link in self._held if link not in faults.clogged_links]:
            for _, _, source_id, address, payload in self._held.pop(link):
                # Held packets kept their place in the sender's queue: requeue without counting.
                self._sequence += 1
                flight = (self._now_ms, self._sequence, source_id, address, payload)
                heapq.heappush(self._in_flight, flight)

    def next_due_ms(self) -> int | None:
        """When the next scheduled packet is due, or ``None`` if none is scheduled."""
        return self._in_flight[0][0] if self._in_flight else None

    def advance(self, delta_ms: int) -> int:
        """Move time forward by ``delta_ms`` (>= 0), delivering every packet due by then.

        Returns the number of packets delivered into receive queues.
        """
        if delta_ms < 0:
            raise ValueError(f"time cannot go backwards: delta_ms={delta_ms}")
        target_ms = self._now_ms + delta_ms
        delivered = 0
        in_flight = self._in_flight
        while in_flight and in_flight[0][0] <= target_ms:
            flight = heapq.heappop(in_flight)
            self._now_ms = max(self._now_ms, flight[0])
            delivered += self._land(flight)
        self._now_ms = target_ms
        return delivered

    def run_until_idle(self, max_ms: int) -> int:
        """Advance from due packet to due packet until none is scheduled or ``max_ms`` passed.

        Returns the number of packets delivered. Clogged packets stay held.
        """
        deadline_ms = self._now_ms + max_ms
        delivered = 0
        while (due_ms := self.next_due_ms()) is not None and due_ms <= deadline_ms:
            delivered += self.advance(due_ms - self._now_ms)
        return delivered

    def _record(self, source_id: str, destination: str, event: str, payload: bytes) -> None:
        if self.trace is not None:
            self.trace.append(TraceEntry(self._now_ms, source_id, destination, event, payload))

    def _submit(self, source: MemoryTransport, address: str, payload: bytes) -> bool:
        """Schedule a packet from ``source``; ``False`` if its link already holds a full queue."""
        link = (source.node_id, address)
        if self._queued_by_link.get(link, 0) >= source.config.send_queue_messages:
            return False
        self._record(source.node_id, address, "sent", payload)
        faults, chance = self._faults, self._random.random
        if faults.drop_probability and chance() < faults.drop_probability:
            self._counts.dropped += 1
            self._record(source.node_id, address, "dropped", payload)
            return True
        self._schedule(self._now_ms + self._draw_delay_ms(), source.node_id, address, payload)
        if faults.duplicate_probability and chance() < faults.duplicate_probability:
            self._counts.duplicated += 1
            self._record(source.node_id, address, "duplicated", payload)
            self._schedule(self._now_ms + self._draw_delay_ms(), source.node_id, address, payload)
        return True

    def _draw_delay_ms(self) -> int:
        faults = self._faults
        delay_ms = faults.delay_ms_min
        if faults.delay_ms_max > faults.delay_ms_min:
            delay_ms = self._random.randint(faults.delay_ms_min, faults.delay_ms_max)
        if faults.reorder_probability and self._random.random() < faults.reorder_probability:
            self._counts.reordered += 1
            delay_ms += self._random.randint(1, faults.reorder_delay_ms_max)
        return delay_ms

    def _schedule(self, due_ms: int, source_id: str, address: str, payload: bytes) -> None:
        self._sequence += 1
        self._counts.scheduled += 1
        link = (source_id, address)
        self._queued_by_link[link] = self._queued_by_link.get(link, 0) + 1
        heapq.heappush(self._in_flight, (due_ms, self._sequence, source_id, address, payload))

    def _release(self, source_id: str, address: str) -> None:
        link = (source_id, address)
        remaining = self._queued_by_link[link] - 1
        if remaining:
            self._queued_by_link[link] = remaining
        else:
            del self._queued_by_link[link]

    def _land(self, flight: _Flight) -> int:
        """Deliver, hold or lose one due packet; returns 1 if it reached a receive queue."""
        _, _, source_id, address, payload = flight
        endpoint = self._endpoints.get(address)
        if endpoint is None:
            self._counts.no_endpoint += 1
            return self._lose(flight, "no_endpoint")
        link = (source_id, endpoint.node_id)
        if not self._faults.can_pass(*link):
            self._counts.cut += 1
            return self._lose(flight, "cut")
        if link in self._faults.clogged_links:
            # A held packet keeps its place in the sender's queue: a clogged path pushes back.
            self._counts.clogged += 1
            self._record(source_id, address, "clogged", payload)
            self._held.setdefault(link, deque()).append(flight)
            return 0
        self._release(source_id, address)
        self._counts.delivered += 1
        self._record(source_id, address, "delivered", payload)
        endpoint._arrive(source_id, payload)
        return 1

    def _lose(self, flight: _Flight, event: str) -> int:
        _, _, source_id, address, payload = flight
        self._release(source_id, address)
        self._record(source_id, address, event, payload)
        return 0

    def _detach(self, endpoint: MemoryTransport) -> None:
        if self._endpoints.get(endpoint.address) is endpoint:
            del self._endpoints[endpoint.address]


class MemoryTransport:
    """One endpoint of a :class:`MemoryNetwork`; implements :class:`crdtstream.transport.Transport`.

    Obtain it from :meth:`MemoryNetwork.endpoint`. Packets from any endpoint of the same network
    are accepted (there is no authentication to simulate); sends go only to added peers.
    """

    def __init__(
        self, network: MemoryNetwork, node_id: str, address: str, config: TransportConfig
    ) -> None:
        self._network = network
        self._node_id = node_id
        self.address = address
        self.config = config
        self._peers: dict[str, str] = {}
        self._inbox: deque[Packet] = deque()
        self._counters = _Counters()
        self._closed = False
        self._readable: asyncio.Event | None = None

    @property
    def node_id(self) -> str:
        """This endpoint's node id."""
        return self._node_id

    @property
    def max_payload_bytes(self) -> int:
        """The payload limit from the endpoint's :class:`TransportConfig`."""
        return self.config.max_payload_bytes

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def add_peer(self, peer_id: str, address: str) -> None:
        """Make ``peer_id`` reachable at ``address`` (any string; usually ``memory://<id>``)."""
        self._check_open()
        self._peers[validate_node_id(peer_id)] = address

    def remove_peer(self, peer_id: str) -> None:
        """Forget ``peer_id``; packets already in flight to it still travel."""
        self._peers.pop(peer_id, None)

    def send(self, peer_id: str, payload: bytes) -> bool:
        """Hand ``payload`` to the network for ``peer_id``; see the Transport contract."""
        self._check_open()
        address = self._peers.get(peer_id)
        if address is None:
            self._counters.rejected_unknown_peer += 1
            raise PeerUnknownError(f"{self._node_id}: unknown peer {peer_id!r}")
        if len(payload) > self.config.max_payload_bytes:
            self._counters.rejected_oversize += 1
            raise PayloadTooLargeError(
                f"payload of {len(payload)} bytes exceeds {self.config.max_payload_bytes}"
            )
        if self._network._submit(self, address, bytes(payload)):
            self._counters.sent += 1
            return True
        self._counters.dropped_full += 1
        return False

    def receive(self, max_packets: int) -> list[Packet]:
        """Return up to ``max_packets`` delivered packets, oldest first."""
        self._check_open()
        if max_packets < 1:
            raise ValueError(f"max_packets must be >= 1, got {max_packets}")
        inbox = self._inbox
        count = min(max_packets, len(inbox))
        packets = [inbox.popleft() for _ in range(count)]
        self._counters.received += count
        return packets

    async def wait_readable(self, timeout_ms: int) -> bool:
        """Wait until a packet is delivered (by someone advancing the network) or timeout.

        The timeout runs on the event loop's clock: this serves drivers that run over the
        simulated network inside an event loop; step-by-step simulations never call it.
        """
        self._check_open()
        if self._inbox:
            return True
        # A fresh event per wait, because an event is bound to the loop it first ran in.
        self._readable = readable = asyncio.Event()
        try:
            await asyncio.wait_for(readable.wait(), timeout_ms / 1000)
        except TimeoutError:
            pass  # an empty inbox is the answer
        finally:
            self._readable = None
        self._check_open()
        return bool(self._inbox)

    def stats(self) -> TransportStats:
        """A snapshot of this endpoint's counters."""
        return self._counters.snapshot()

    def close(self) -> None:
        """Leave the network; unread packets are discarded and later arrivals are lost."""
        if self._closed:
            return
        self._closed = True
        self._network._detach(self)
        self._inbox.clear()
        self._peers.clear()
        if self._readable is not None:
            self._readable.set()

    def _arrive(self, source_id: str, payload: bytes) -> None:
        counters = self._counters
        if len(payload) > self.config.max_payload_bytes:
            counters.dropped_oversize += 1
        elif len(self._inbox) >= self.config.receive_queue_messages:
            counters.dropped_receive_full += 1
        else:
            self._inbox.append(Packet(source_id, payload))
            if self._readable is not None:
                self._readable.set()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError(f"{self._node_id}: endpoint is closed")
