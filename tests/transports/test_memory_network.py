"""The simulated network: reproducible from its seed, and every fault kind observably applied."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtstream.config import TransportConfig
from crdtstream.errors import ConfigError, TransportError
from transports.memory import FaultOptions, MemoryNetwork, MemoryTransport, TraceEntry

NODES = ("a", "b", "c", "d")


def mesh(network: MemoryNetwork, config: TransportConfig | None = None) -> list[MemoryTransport]:
    """Endpoints for NODES, every one a peer of every other."""
    endpoints = [network.endpoint(node_id, config) for node_id in NODES]
    for endpoint in endpoints:
        for other in endpoints:
            endpoint.add_peer(other.node_id, other.address)
    return endpoints


def payloads_at(endpoint: MemoryTransport) -> list[bytes]:
    return [packet.payload for packet in endpoint.receive(1_000_000)]


def chatter(seed: int, faults: FaultOptions, rounds: int = 30) -> list[TraceEntry]:
    """A seeded exchange among NODES under ``faults``; returns the network's trace."""
    network = MemoryNetwork(seed, faults, trace=True)
    endpoints = mesh(network)
    workload = random.Random(seed + 1)
    for round_number in range(rounds):
        sender = workload.choice(endpoints)
        receiver = workload.choice(endpoints)
        sender.send(receiver.node_id, round_number.to_bytes(2, "big"))
        network.advance(workload.randrange(0, 5))
    network.run_until_idle(max_ms=10_000)
    assert network.trace is not None
    return network.trace


MESSY = FaultOptions(
    drop_probability=0.2,
    duplicate_probability=0.2,
    reorder_probability=0.3,
    delay_ms_min=1,
    delay_ms_max=20,
)


def test_the_same_seed_gives_the_same_trace() -> None:
    for seed in range(20):
        assert chatter(seed, MESSY) == chatter(seed, MESSY), f"seed={seed}"


def test_different_seeds_give_different_traces() -> None:
    traces = {tuple(chatter(seed, MESSY)) for seed in range(10)}
    assert len(traces) == 10


def test_without_faults_delivery_is_complete_and_in_order() -> None:
    network = MemoryNetwork(seed=1)
    a, b, *_ = mesh(network)
    for index in range(100):
        a.send("b", bytes([index]))
    network.advance(0)
    assert payloads_at(b) == [bytes([index]) for index in range(100)]


def test_drop_loses_packets_and_counts_them() -> None:
    network = MemoryNetwork(seed=2, faults=FaultOptions(drop_probability=0.5))
    a, b, *_ = mesh(network)
    for index in range(1000):
        assert a.send("b", index.to_bytes(2, "big"))  # a lost packet was still accepted
    network.advance(0)
    arrived = len(payloads_at(b))
    assert arrived + network.stats().dropped == 1000
    assert 350 < arrived < 650, "seed=2"


def test_duplicate_delivers_a_second_copy() -> None:
    network = MemoryNetwork(seed=3, faults=FaultOptions(duplicate_probability=1.0))
    a, b, *_ = mesh(network)
    for index in range(50):
        a.send("b", bytes([index]))
    network.advance(0)
    assert sorted(payloads_at(b)) == sorted(bytes([index]) for index in range(50) for _ in "xx")
    assert network.stats().duplicated == 50


def test_reorder_lets_later_packets_overtake_and_loses_none() -> None:
    faults = FaultOptions(reorder_probability=0.5, reorder_delay_ms_max=5)
    network = MemoryNetwork(seed=4, faults=faults)
    a, b, *_ = mesh(network)
    sent = [index.to_bytes(2, "big") for index in range(200)]
    for payload in sent:
        a.send("b", payload)
        network.advance(1)
    network.run_until_idle(max_ms=100)
    arrived = payloads_at(b)
    assert sorted(arrived) == sent
    assert arrived != sent, "seed=4"
    assert network.stats().reordered > 0


def test_delay_holds_each_packet_within_its_bounds() -> None:
    network = MemoryNetwork(seed=5, faults=FaultOptions(delay_ms_min=10, delay_ms_max=30))
    a, b, *_ = mesh(network)
    for index in range(100):
        a.send("b", bytes([index]))
    assert network.advance(9) == 0
    network.advance(21)
    assert len(payloads_at(b)) == 100
    assert network.in_flight == 0


def test_partition_groups_cut_between_groups_only() -> None:
    network = MemoryNetwork(seed=6, faults=FaultOptions().partitioned({"a", "b"}, {"c", "d"}))
    a, b, c, d = mesh(network)
    a.send("b", b"same side")
    a.send("c", b"across")
    d.send("a", b"across back")
    c.send("d", b"same side too")
    network.advance(0)
    assert payloads_at(b) == [b"same side"]
    assert payloads_at(d) == [b"same side too"]
    assert payloads_at(a) == payloads_at(c) == []
    assert network.stats().cut == 2


def test_isolate_cuts_one_node_off_both_ways() -> None:
    network = MemoryNetwork(seed=7, faults=FaultOptions().isolated("a"))
    a, b, c, _ = mesh(network)
    a.send("b", b"out")
    b.send("a", b"in")
    b.send("c", b"others still talk")
    network.advance(0)
    assert payloads_at(a) == payloads_at(b) == []
    assert payloads_at(c) == [b"others still talk"]


def test_one_way_block_cuts_one_direction_only() -> None:
    network = MemoryNetwork(seed=8, faults=FaultOptions().blocked("a", "b"))
    a, b, *_ = mesh(network)
    a.send("b", b"blocked")
    b.send("a", b"passes")
    network.advance(0)
    assert payloads_at(b) == []
    assert payloads_at(a) == [b"passes"]


def test_a_partition_also_catches_packets_in_flight_and_heal_restores() -> None:
    network = MemoryNetwork(seed=9, faults=FaultOptions(delay_ms_min=10, delay_ms_max=10))
    a, b, *_ = mesh(network)
    a.send("b", b"in flight when the cable is cut")
    network.set_faults(network.faults.isolated("b"))
    network.advance(10)
    assert payloads_at(b) == []
    network.set_faults(network.faults.healed())
    a.send("b", b"after heal")
    network.advance(10)
    assert payloads_at(b) == [b"after heal"]


def test_clog_holds_packets_in_order_until_released() -> None:
    network = MemoryNetwork(seed=10, faults=FaultOptions().clogged("a", "b"))
    a, b, *_ = mesh(network)
    for index in range(5):
        a.send("b", bytes([index]))
    b.send("a", b"other direction is free")
    network.advance(100)
    assert payloads_at(b) == []
    assert payloads_at(a) == [b"other direction is free"]
    assert network.in_flight == 5
    network.set_faults(network.faults.healed())
    network.advance(0)
    assert payloads_at(b) == [bytes([index]) for index in range(5)]


def test_a_clogged_link_fills_the_senders_queue() -> None:
    config = TransportConfig(send_queue_messages=10)
    network = MemoryNetwork(seed=11, faults=FaultOptions().clogged("a", "b"))
    a, *_ = mesh(network, config)
    results = []
    for _ in range(30):
        results.append(a.send("b", b"x"))
        network.advance(1)
    assert results.count(True) == 10
    assert a.stats().dropped_full == 20


def test_a_full_receive_queue_drops_the_newest_and_counts() -> None:
    config = TransportConfig(receive_queue_messages=5)
    network = MemoryNetwork(seed=12)
    a, b, *_ = mesh(network, config)
    for index in range(8):
        a.send("b", bytes([index]))
    network.advance(0)
    assert payloads_at(b) == [bytes([index]) for index in range(5)]
    assert b.stats().dropped_receive_full == 3


def test_an_address_is_held_by_one_open_endpoint_at_a_time() -> None:
    network = MemoryNetwork(seed=13)
    first = network.endpoint("a")
    with pytest.raises(TransportError, match="in use"):
        network.endpoint("a")
    first.close()
    network.endpoint("a")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"drop_probability": 1.5}, "faults.drop_probability"),
        ({"duplicate_probability": -0.1}, "faults.duplicate_probability"),
        ({"delay_ms_min": 5, "delay_ms_max": 1}, "faults.delay_ms_min"),
        ({"reorder_delay_ms_max": 0}, "faults.reorder_delay_ms_max"),
        ({"partition_groups": (frozenset("a"), frozenset("ab"))}, "faults.partition_groups"),
    ],
)
def test_impossible_faults_are_refused_naming_the_field(
    options: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError, match=field):
        FaultOptions(**options)  # type: ignore[arg-type]


def test_time_cannot_go_backwards() -> None:
    with pytest.raises(ValueError, match="backwards"):
        MemoryNetwork(seed=14).advance(-1)


@given(
    seed=st.integers(0, 2**32),
    duplicate=st.floats(0.0, 1.0),
    reorder=st.floats(0.0, 1.0),
    delay_ms_max=st.integers(0, 50),
)
def test_without_loss_every_packet_arrives_at_least_once(
    seed: int, duplicate: float, reorder: float, delay_ms_max: int
) -> None:
    faults = FaultOptions(
        duplicate_probability=duplicate, reorder_probability=reorder, delay_ms_max=delay_ms_max
    )
    network = MemoryNetwork(seed, faults)
    a, b, *_ = mesh(network)
    sent = [index.to_bytes(2, "big") for index in range(40)]
    for payload in sent:
        a.send("b", payload)
    network.run_until_idle(max_ms=1_000)
    arrived = payloads_at(b)
    assert set(arrived) == set(sent), f"seed={seed}"
    assert len(arrived) == 40 + network.stats().duplicated, f"seed={seed}"
