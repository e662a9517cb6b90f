"""The conformance suite every Transport passes (contract: crdtstream/transport.py docstring).

Each test runs against the simulated network and against ZeroMQ on loopback, through the
``harness`` fixture. Without injected faults both deliver everything, so the tests can demand
exact delivery; the contract itself only promises best effort, which the flood test respects.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from transport_harness import Harness, collect, drain

from crdtstream.config import TransportConfig
from crdtstream.errors import PayloadTooLargeError, PeerUnknownError, TransportClosedError
from crdtstream.transport import Transport, TransportStats


def connect(harness: Harness, endpoints: list[Transport]) -> None:
    """Make every endpoint a peer of every endpoint (itself included)."""
    for endpoint in endpoints:
        for other in endpoints:
            endpoint.add_peer(other.node_id, harness.address_of(other))


def random_payloads(rng: random.Random, count: int) -> list[bytes]:
    """Binary payloads of mixed sizes, the empty one included."""
    sizes = [0, 1, 255, 4096, *[rng.randrange(0, 3000) for _ in range(count - 4)]]
    return [rng.randbytes(size) for size in sizes[:count]]


def test_endpoints_satisfy_the_protocol(harness: Harness) -> None:
    endpoint = harness.open("a")
    assert isinstance(endpoint, Transport)
    assert endpoint.node_id == "a"
    assert endpoint.max_payload_bytes == TransportConfig().max_payload_bytes


@pytest.mark.parametrize("node_count", [2, 5])
def test_every_payload_arrives_intact_from_its_sender(harness: Harness, node_count: int) -> None:
    seed = 1000 + node_count
    rng = random.Random(seed)
    endpoints = [harness.open(f"node-{index}") for index in range(node_count)]
    connect(harness, endpoints)
    expected: dict[str, Counter[tuple[str, bytes]]] = {e.node_id: Counter() for e in endpoints}
    for sender in endpoints:
        for receiver in endpoints:
            for payload in random_payloads(rng, 6):
                assert sender.send(receiver.node_id, payload), f"seed={seed}"
                expected[receiver.node_id][(sender.node_id, payload)] += 1
    for receiver in endpoints:
        packets = collect(harness, receiver, 6 * node_count)
        got = Counter((packet.source_id, packet.payload) for packet in packets)
        assert got == expected[receiver.node_id], f"seed={seed} receiver={receiver.node_id}"


def test_large_payloads_arrive_intact(harness: Harness) -> None:
    config = TransportConfig(max_payload_bytes=256 * 1024)
    a, b = harness.open("a", config), harness.open("b", config)
    a.add_peer("b", harness.address_of(b))
    rng = random.Random(42)
    payloads = [rng.randbytes(size) for size in (16_383, 16_384, 16_385, 100_000, 256 * 1024)]
    for payload in payloads:
        assert a.send("b", payload)
    assert [p.payload for p in collect(harness, b, len(payloads))] == payloads


def test_one_endpoint_talks_with_many_peers(harness: Harness) -> None:
    hub = harness.open("hub")
    spokes = [harness.open(f"spoke-{index:02d}") for index in range(16)]
    for spoke in spokes:
        hub.add_peer(spoke.node_id, harness.address_of(spoke))
        spoke.add_peer("hub", harness.address_of(hub))
        assert spoke.send("hub", spoke.node_id.encode())
        assert hub.send(spoke.node_id, b"to " + spoke.node_id.encode())
    at_hub = collect(harness, hub, len(spokes))
    assert sorted(packet.payload for packet in at_hub) == sorted(
        spoke.node_id.encode() for spoke in spokes
    )
    assert all(packet.source_id == packet.payload.decode() for packet in at_hub)
    for spoke in spokes:
        packets = collect(harness, spoke, 1)
        assert [(p.source_id, p.payload) for p in packets] == [
            ("hub", b"to " + spoke.node_id.encode())
        ]


def test_sending_to_an_unknown_or_removed_peer_raises_and_is_counted(harness: Harness) -> None:
    a, b = harness.open("a"), harness.open("b")
    with pytest.raises(PeerUnknownError):
        a.send("b", b"x")
    a.add_peer("b", harness.address_of(b))
    a.remove_peer("b")
    a.remove_peer("never-added")  # removing what is not there is a no-op
    with pytest.raises(PeerUnknownError):
        a.send("b", b"x")
    assert a.stats().rejected_unknown_peer == 2
    assert a.stats().sent == 0


def test_invalid_peer_id_is_refused(harness: Harness) -> None:
    a = harness.open("a")
    with pytest.raises(ValueError, match="node id"):
        a.add_peer("no spaces allowed", harness.dead_address())


def test_sending_to_a_dead_peer_neither_blocks_nor_raises(harness: Harness) -> None:
    config = TransportConfig(send_queue_messages=50)
    a = harness.open("a", config)
    a.add_peer("ghost", harness.dead_address())
    results = [a.send("ghost", b"are you there?") for _ in range(500)]
    harness.flush()
    stats = a.stats()
    assert stats.sent == results.count(True)
    assert stats.dropped_full == results.count(False)
    assert stats.dropped_full > 0, "the queue for a dead peer must be bounded"
    assert stats.sent <= config.send_queue_messages


def test_a_restarted_peer_receives_again(harness: Harness) -> None:
    a, b = harness.open("a"), harness.open("b")
    a.add_peer("b", harness.address_of(b))
    assert a.send("b", b"first")
    assert [p.payload for p in collect(harness, b, 1)] == [b"first"]
    b = harness.reopen(b)
    received: list[bytes] = []

    def resent_and_arrived() -> bool:
        a.send("b", b"again")  # best effort: repeat until the reconnect has happened
        harness.flush()
        received.extend(packet.payload for packet in b.receive(100))
        return bool(received)

    assert harness.wait_until(resent_and_arrived)
    assert set(received) == {b"again"}


def test_close_is_idempotent_and_later_calls_raise(harness: Harness) -> None:
    a, b = harness.open("a"), harness.open("b")
    a.add_peer("b", harness.address_of(b))
    a.send("b", b"unread")
    harness.flush()
    b.close()
    b.close()
    assert b.closed
    with pytest.raises(TransportClosedError):
        b.send("a", b"x")
    with pytest.raises(TransportClosedError):
        b.receive(1)
    with pytest.raises(TransportClosedError):
        b.add_peer("a", harness.address_of(a))
    with pytest.raises(TransportClosedError):
        asyncio.run(b.wait_readable(10))
    b.remove_peer("a")
    assert isinstance(b.stats(), TransportStats)


def test_sending_to_a_closed_peer_is_silently_lost(harness: Harness) -> None:
    a, b = harness.open("a"), harness.open("b")
    a.add_peer("b", harness.address_of(b))
    b.close()
    for _ in range(10):
        a.send("b", b"into the void")  # must not raise: a closed peer is a dead peer
    harness.flush()
    assert a.stats().sent + a.stats().dropped_full == 10


def test_payload_over_the_limit_is_refused_and_the_limit_itself_passes(harness: Harness) -> None:
    config = TransportConfig(max_payload_bytes=2048)
    a, b = harness.open("a", config), harness.open("b", config)
    a.add_peer("b", harness.address_of(b))
    with pytest.raises(PayloadTooLargeError):
        a.send("b", bytes(2049))
    assert a.stats().rejected_oversize == 1
    assert a.send("b", bytes(2048))
    assert [len(p.payload) for p in collect(harness, b, 1)] == [2048]


@pytest.mark.parametrize(("receiver_limit", "size"), [(1024, 2000), (32 * 1024, 40_000)])
def test_an_oversize_arrival_is_dropped_and_counted_by_the_receiver(
    harness: Harness, receiver_limit: int, size: int
) -> None:
    a = harness.open("a", TransportConfig(max_payload_bytes=64 * 1024))
    b = harness.open("b", TransportConfig(max_payload_bytes=receiver_limit))
    a.add_peer("b", harness.address_of(b))
    assert a.send("b", bytes(size))
    assert a.send("b", b"small")  # same link, sent after: its arrival means the first was seen
    assert [p.payload for p in collect(harness, b, 1)] == [b"small"]
    assert b.stats().dropped_oversize == 1


def test_a_flood_is_bounded_and_what_arrives_is_intact(harness: Harness) -> None:
    config = TransportConfig(send_queue_messages=100, receive_queue_messages=100)
    a, b = harness.open("a", config), harness.open("b", config)
    a.add_peer("b", harness.address_of(b))
    accepted: set[bytes] = set()
    attempts = 0
    # Up to 200 MB offered without reading a byte: more than any socket buffer holds, so the
    # bound must show as refusals long before the end.
    while attempts < 50_000 and a.stats().dropped_full < 1_000:
        payload = attempts.to_bytes(4, "big") * 1024
        attempts += 1
        if a.send("b", payload):
            accepted.add(payload)
    stats = a.stats()
    assert stats.dropped_full == 1_000, f"accepted {len(accepted)} of {attempts}: unbounded"
    assert stats.sent == len(accepted) == attempts - stats.dropped_full
    arrived = drain(harness, b)
    assert len(arrived) <= len(accepted)
    assert all(p.payload in accepted and p.source_id == "a" for p in arrived)


def test_receive_returns_at_most_what_is_asked(harness: Harness) -> None:
    a, b = harness.open("a"), harness.open("b")
    a.add_peer("b", harness.address_of(b))
    for index in range(10):
        a.send("b", bytes([index]))
    harness.flush()
    with pytest.raises(ValueError, match="max_packets"):
        b.receive(0)
    received: list[bytes] = []

    def in_threes() -> bool:
        batch = b.receive(3)
        assert len(batch) <= 3
        received.extend(packet.payload for packet in batch)
        return len(received) >= 10

    assert harness.wait_until(in_threes)
    assert sorted(received) == [bytes([i]) for i in range(10)]


def test_wait_readable_times_out_empty_and_wakes_on_arrival(harness: Harness) -> None:
    a, b = harness.open("a"), harness.open("b")
    a.add_peer("b", harness.address_of(b))

    async def scenario() -> tuple[bool, bool]:
        quiet = await b.wait_readable(20)
        loop = asyncio.get_running_loop()

        def wake() -> None:
            a.send("b", b"wake up")
            harness.flush()

        loop.call_soon(wake)
        woken = await b.wait_readable(10_000)
        return quiet, woken

    quiet, woken = asyncio.run(scenario())
    assert (quiet, woken) == (False, True)
    assert [p.payload for p in b.receive(10)] == [b"wake up"]


def test_stats_are_an_immutable_snapshot(harness: Harness) -> None:
    a, b = harness.open("a"), harness.open("b")
    a.add_peer("b", harness.address_of(b))
    before = a.stats()
    a.send("b", b"x")
    assert before.sent == 0
    assert a.stats().sent == 1
    assert a.stats().as_dict()["sent"] == 1
    with pytest.raises(AttributeError):
        before.sent = 5  # type: ignore[misc]


def test_closing_wakes_a_waiter_with_transport_closed(harness: Harness) -> None:
    b = harness.open("b")

    async def scenario() -> None:
        asyncio.get_running_loop().call_soon(b.close)
        await b.wait_readable(10_000)

    with pytest.raises(TransportClosedError):
        asyncio.run(asyncio.wait_for(scenario(), timeout=20))
