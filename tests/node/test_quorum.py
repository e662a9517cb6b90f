"""Quorum mode on the simulated network: writes confirmed by a majority, reads merged from a
majority, so a quorum read sees every quorum write before gossip spreads it (W + R > N), and
a minority fails with UnavailableError instead of pretending."""

from __future__ import annotations

import random
from typing import cast

import pytest

from crdtstream import wire
from crdtstream.clock import ManualClock
from crdtstream.config import GossipConfig, PolicyRule
from crdtstream.engine import Answer, Ticket, quorum
from crdtstream.engine.quorum import majority
from crdtstream.errors import UnavailableError
from crdtstream.node import Node, NodeConfig
from crdtstream.window.store import WindowStore
from tests.node.engine_calls import OP_OF_KIND, windows
from tests.node.test_node_simulation import Cluster
from transports.memory import FaultOptions, MemoryNetwork, memory_address

# Delta gossip all but off: whatever a node learns here, it learns through quorum requests.
SLOW_GOSSIP = GossipConfig(interval_ms=600_000, fanout=1)
NAMES = ["a", "b", "c", "d", "e"]
QUORUM = (PolicyRule("*", "quorum"),)


class Outcome:
    """What a quorum request completed with (its error, None on success), and how often."""

    def __init__(self) -> None:
        self.calls: list[Exception | None] = []

    def __call__(self, outcome: Ticket | Exception | None) -> None:
        self.calls.append(outcome.error if isinstance(outcome, Ticket) else outcome)

    @property
    def settled(self) -> bool:
        return bool(self.calls)


def run_until(cluster: Cluster, outcome: Outcome, limit_ms: int = 5_000) -> None:
    waited = 0
    while not outcome.settled and waited < limit_ms:
        cluster.run(10)
        waited += 10
    assert len(outcome.calls) == 1, f"seed={cluster.seed} calls={outcome.calls}"


def quorum_write(
    node: Node, key: str, kind: str, value: float | str, outcome: Outcome, **options: object
) -> Ticket:
    """A write through the engine to a quorum key; ``outcome`` records how it completes."""
    op = OP_OF_KIND[kind]
    ticket = node.engine.write(key, op, value, kind=kind, **options)  # type: ignore[arg-type]
    ticket.on_done(outcome)
    return ticket


def quorum_remove(node: Node, key: str, item: str, outcome: Outcome) -> Ticket:
    ticket = node.engine.write(key, "remove", item)
    ticket.on_done(outcome)
    return ticket


def quorum_read(node: Node, key: str, outcome: Outcome) -> Ticket:
    ticket = node.engine.read(key)
    ticket.on_done(outcome)
    return ticket


def answer(ticket: Ticket) -> Answer:
    return ticket.result()


def settled_cluster(seed: int) -> Cluster:
    cluster = Cluster(seed, NAMES, None, gossip=SLOW_GOSSIP, policy=QUORUM)
    cluster.run(1_000)  # membership settles
    return cluster


def values(node: Node, key: str) -> list[object]:
    return [window.value for window in windows(node, key)]


def total(node: Node, key: str) -> float:
    return sum(float(window.value) for window in windows(node, key))  # type: ignore[arg-type,misc]


def test_majority_sizes() -> None:
    assert [majority(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


def test_a_quorum_read_sees_a_quorum_write_that_gossip_has_not_spread() -> None:
    for seed in range(3):
        cluster = settled_cluster(seed)
        network = cluster.network
        # The write reaches only a, b and c (a majority of five).
        network.set_faults(FaultOptions().partitioned(["a", "b", "c"], ["d", "e"]))
        wrote = Outcome()
        ticket = quorum_write(cluster.nodes["a"], "hits", "counter", 7, wrote)
        run_until(cluster, wrote)
        assert wrote.calls == [None], f"seed={seed}"
        assert answer(ticket).accepted == 1
        # e now reaches b, c and d but not a; it has never seen the write. b's and c's
        # answers are held back at first: d's answer alone must not complete the read.
        reachable = FaultOptions().partitioned(["b", "c", "d", "e"], ["a"])
        network.set_faults(reachable.clogged("b", "e").clogged("c", "e"))
        assert values(cluster.nodes["e"], "hits") == [], f"seed={seed}"
        read = Outcome()
        quorum_read(cluster.nodes["e"], "hits", read)
        cluster.run(500)
        assert not read.settled, f"seed={seed}"
        network.set_faults(reachable)
        run_until(cluster, read)
        assert read.calls == [None], f"seed={seed}"
        assert values(cluster.nodes["e"], "hits") == [7.0], f"seed={seed}"


def test_a_minority_cannot_confirm_a_write_or_a_read_but_keeps_the_write() -> None:
    cluster = settled_cluster(5)
    cluster.network.set_faults(FaultOptions().partitioned(["a", "b"], ["c", "d", "e"]))
    wrote = Outcome()
    quorum_write(cluster.nodes["a"], "hits", "counter", 3, wrote)
    run_until(cluster, wrote)
    error = wrote.calls[0]
    assert isinstance(error, UnavailableError)
    assert "2 of the 3 nodes" in str(error)
    # Not undone: applied at a (and b, which acknowledged), and it spreads once healed.
    assert values(cluster.nodes["a"], "hits") == [3.0]
    assert values(cluster.nodes["b"], "hits") == [3.0]
    read = Outcome()
    quorum_read(cluster.nodes["b"], "hits", read)
    run_until(cluster, read)
    assert isinstance(read.calls[0], UnavailableError)
    # The majority side serves both.
    wrote_majority = Outcome()
    quorum_write(cluster.nodes["c"], "hits", "counter", 4, wrote_majority)
    run_until(cluster, wrote_majority)
    assert wrote_majority.calls == [None]
    cluster.network.set_faults(FaultOptions())
    read_after_heal = Outcome()
    quorum_read(cluster.nodes["e"], "hits", read_after_heal)
    run_until(cluster, read_after_heal)
    assert read_after_heal.calls == [None]
    assert total(cluster.nodes["e"], "hits") == 7.0  # both writes, in whatever windows


def test_quorum_writes_of_every_kind_and_set_removal_reach_the_reader() -> None:
    cluster = settled_cluster(9)
    writes: list[tuple[str, str, float | str]] = [
        ("latency", "distribution", 12.5),
        ("queue", "gauge", 3.0),
        ("users", "distinct", "u1"),
        ("peak", "max", 9.0),
        ("members", "set", "x"),
    ]
    for key, kind, value in writes:
        wrote = Outcome()
        quorum_write(cluster.nodes["a"], key, kind, value, wrote)
        run_until(cluster, wrote)
        assert wrote.calls == [None], key
    removed = Outcome()
    assert quorum_remove(cluster.nodes["a"], "members", "x", removed)
    run_until(cluster, removed)
    assert removed.calls == [None]
    for key, _, _ in writes:
        read = Outcome()
        quorum_read(cluster.nodes["d"], key, read)
        run_until(cluster, read)
        assert read.calls == [None], key
        assert values(cluster.nodes["d"], key) == values(cluster.nodes["a"], key), key


def test_a_single_node_confirms_at_once_and_a_write_not_applied_sends_nothing() -> None:
    cluster = Cluster(2, ["solo"], None, gossip=SLOW_GOSSIP, policy=QUORUM)
    outcome = Outcome()
    quorum_write(cluster.nodes["solo"], "hits", "counter", 1, outcome)
    assert outcome.calls == [None]
    five = settled_cluster(4)
    late = Outcome()
    sent_before = five.nodes["a"].counters.frames_sent
    ticket = quorum_write(five.nodes["a"], "hits", "counter", 1, late, timestamp_ms=0)
    assert answer(ticket).accepted == 0  # late: nothing changed, nothing to confirm
    assert late.calls == [None]
    assert five.nodes["a"].counters.frames_sent == sent_before


def test_malformed_and_stray_quorum_frames_are_counted_and_change_nothing() -> None:
    cluster = settled_cluster(6)
    cluster.corrupts_frames = True
    node = cluster.nodes["b"]
    before = node.engine.quorum.counters.malformed
    bad = [
        wire.encode(wire.Tag.QUORUM_WRITE, "not a row"),
        wire.encode(wire.Tag.QUORUM_WRITE, [1, {"not": "a delta"}]),
        wire.encode(wire.Tag.QUORUM_READ, [2, 17]),
        wire.encode(wire.Tag.QUORUM_READ, ["id", "hits"]),
    ]
    for frame in bad:
        node.engine.quorum.step("a", frame)
    assert node.engine.quorum.counters.malformed == before + len(bad)
    # Answers to requests this node never made are ignored.
    node.engine.quorum.step("a", wire.encode(wire.Tag.QUORUM_ACK, [99, None]))
    assert node.engine.quorum.outstanding == 0
    assert values(node, "hits") == []


@pytest.mark.parametrize("loss", [0.2, 0.5])
def test_writes_confirmed_under_loss_are_all_seen_by_quorum_reads(loss: float) -> None:
    cluster = settled_cluster(12)
    cluster.network.set_faults(FaultOptions(drop_probability=loss, duplicate_probability=0.1))
    confirmed = 0.0
    for round_number in range(12):
        writer = NAMES[round_number % len(NAMES)]
        wrote = Outcome()
        quorum_write(cluster.nodes[writer], "hits", "counter", 1, wrote)
        run_until(cluster, wrote, limit_ms=10_000)
        if wrote.calls == [None]:
            confirmed += 1
    assert confirmed >= 1, f"seed=12 loss={loss}"
    for reader in NAMES:
        read = Outcome()
        quorum_read(cluster.nodes[reader], "hits", read)
        run_until(cluster, read, limit_ms=10_000)
        if read.calls == [None]:
            seen = total(cluster.nodes[reader], "hits")
            assert seen >= confirmed, f"seed=12 loss={loss} reader={reader}"


def test_a_batch_larger_than_a_frame_travels_in_parts_and_confirms_once_all_merged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(quorum, "FRAME_BYTES_MAX", 4_096)  # a small budget, so many parts
    cluster = settled_cluster(13)
    writer = cluster.nodes["a"]
    outcomes = [Outcome() for _ in range(6_000)]
    for index, outcome in enumerate(outcomes):
        quorum_write(
            writer, f"service.{index:05d}.requests#host:h{index % 7}", "counter", 1, outcome
        )
    frames_before = writer.counters.frames_sent
    run_until(cluster, outcomes[-1])
    assert all(outcome.calls == [None] for outcome in outcomes)
    assert writer.engine.quorum.counters.batches_sent == 1
    # One batch, several frames per member (4 members), so several parts each.
    assert writer.counters.frames_sent - frames_before > 3 * 4
    holders = [
        name
        for name, node in cluster.nodes.items()
        if len(node.engine.store.kind_keys["counter"]) == len(outcomes)
    ]
    assert len(holders) >= majority(len(NAMES)), holders


class Wire:
    """Two pure quorum cores joined by hand-carried frames, to lose or replay chosen ones."""

    def __init__(self) -> None:
        self.to_b: list[bytes] = []
        self.to_c: list[bytes] = []


def test_parts_of_two_different_answers_never_complete_a_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read's answer split in parts, one part lost, the member's state grown before the retry
    is answered: a part of the first answer and a part of the second must not add up."""
    monkeypatch.setattr(quorum, "FRAME_BYTES_MAX", 1_500)
    start_ms = 10_000_000
    b_store, c_store = WindowStore("b~0001"), WindowStore("c~0001")
    slide = b_store.windows.slide_ms
    for index in range(10):
        for item in range(25):
            b_store.add("members", "set", f"s{index}-{item:03d}", start_ms + index * slide)
    wire_ = Wire()
    reader = quorum.Quorum(c_store, lambda peer, frame: wire_.to_b.append(frame), first_id=7)
    member = quorum.Quorum(b_store, lambda peer, frame: wire_.to_c.append(frame), first_id=99)
    outcome = Outcome()
    reader.read("members", ["a", "b"], 3, 0, 5_000, outcome)
    reader.flush(0)
    member.step("c", wire_.to_b.pop())
    first, wire_.to_c = list(wire_.to_c), []
    assert len(first) >= 2
    reader.step("b", first[0])  # the rest of the first answer is lost
    for index in range(10, 13):
        for item in range(25):
            b_store.add("members", "set", f"s{index}-{item:03d}", start_ms + index * slide)
    reader.tick(quorum.RETRY_MS)
    member.step("c", wire_.to_b.pop())
    second, wire_.to_c = list(wire_.to_c), []
    reader.step("b", second[-1])
    if len(second) > 1:
        assert not outcome.settled, "parts of two answers completed the read"
        for frame in second[:-1]:
            reader.step("b", frame)
    assert outcome.calls == [None]
    seen: set[object] = set().union(*[cast(set[str], w.value) for w in c_store.read_key("members")])
    assert seen == set().union(*[cast(set[str], w.value) for w in b_store.read_key("members")])


def test_an_answer_to_an_earlier_run_does_not_confirm_a_new_write() -> None:
    store = WindowStore("a~0001")
    sent: list[bytes] = []
    first_run = quorum.Quorum(store, lambda peer, frame: sent.append(frame), first_id=0)
    first_run.write(store.version, ["b", "c"], 3, 0, 5_000, Outcome())
    store.add("x", "counter", 1, 0)
    first_run.flush(0)
    stale_ack = wire.encode(wire.Tag.QUORUM_ACK, [1, 0])  # b acknowledged request 1
    # The node restarts: a new run, whose ids start elsewhere.
    second_run = quorum.Quorum(store, lambda peer, frame: None, first_id=123_456_789)
    outcome = Outcome()
    before = store.version
    store.add("y", "counter", 1, 0)
    second_run.write(before, ["b", "c"], 3, 0, 5_000, outcome)
    second_run.flush(0)
    second_run.step("b", stale_ack)
    assert not outcome.settled


def test_requests_on_a_shut_down_node_fail_at_once() -> None:
    cluster = settled_cluster(21)
    node = cluster.nodes["a"]
    node.close(leave=False)
    wrote, read = Outcome(), Outcome()
    quorum_write(node, "hits", "counter", 1, wrote)
    quorum_read(node, "hits", read)
    assert isinstance(wrote.calls[0], UnavailableError)
    assert isinstance(read.calls[0], UnavailableError)
    assert node.engine.quorum.outstanding == 0


def test_a_member_that_refuses_the_cells_does_not_acknowledge() -> None:
    """b and c know ``k`` as a gauge; a's counter write to ``k`` is held by a alone."""
    cluster = settled_cluster(22)
    for name in ("b", "c", "d", "e"):
        node = cluster.nodes[name]  # a local write, set up without a quorum round
        node.engine.store.add("k", "gauge", 1.0, cluster.clock.now_ms())
    wrote = Outcome()
    quorum_write(cluster.nodes["a"], "k", "counter", 1, wrote)
    run_until(cluster, wrote)
    assert isinstance(wrote.calls[0], UnavailableError)
    assert cluster.nodes["b"].engine.quorum.counters.writes_refused >= 1


def test_reads_of_many_keys_travel_in_frames_that_fit() -> None:
    cluster = settled_cluster(23)
    reader = cluster.nodes["a"]
    outcomes = [Outcome() for _ in range(30_000)]
    for index, outcome in enumerate(outcomes):
        quorum_read(reader, f"a.rather.long.key.name.for.reading.{index:06d}#host:h1", outcome)
    run_until(cluster, outcomes[-1])
    assert all(outcome.calls == [None] for outcome in outcomes)
    assert reader.counters.frames_oversize == 0
    assert reader.engine.quorum.counters.batches_sent > 1


def test_a_configured_cluster_size_keeps_a_node_that_knows_too_few_from_a_false_majority() -> None:
    network = MemoryNetwork(3, FaultOptions())
    clock = ManualClock(1_000_000)

    def lonely(size: int) -> Node:
        name = f"n{size}"
        config = NodeConfig(
            node_id=name,
            listen_address=memory_address(name),
            quorum_cluster_size=size,
            policy=QUORUM,
        )
        return Node(config, network.endpoint(name), clock, random.Random(size))

    alone = Outcome()
    quorum_write(lonely(0), "hits", "counter", 1, alone)
    assert alone.calls == [None]  # it knows no one: a cluster of one
    told = Outcome()
    quorum_write(lonely(3), "hits", "counter", 1, told)
    assert isinstance(told.calls[0], UnavailableError)
    assert "a majority of 3 nodes needs 1 other members, 0 known" in str(told.calls[0])
