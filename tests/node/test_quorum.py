"""Quorum mode on the simulated network: writes confirmed by a majority, reads merged from a
majority, so a quorum read sees every quorum write before gossip spreads it (W + R > N), and
a minority fails with UnavailableError instead of pretending."""

from __future__ import annotations

import pytest

from crdtstream import wire
from crdtstream.config import GossipConfig
from crdtstream.errors import UnavailableError
from crdtstream.node import Node, quorum
from crdtstream.node.quorum import majority
from tests.node.test_node_simulation import Cluster
from transports.memory import FaultOptions

# Delta gossip all but off: whatever a node learns here, it learns through quorum requests.
SLOW_GOSSIP = GossipConfig(interval_ms=600_000, fanout=1)
NAMES = ["a", "b", "c", "d", "e"]


class Outcome:
    """What a quorum request's ``done`` was called with, and how often."""

    def __init__(self) -> None:
        self.calls: list[Exception | None] = []

    def __call__(self, error: Exception | None) -> None:
        self.calls.append(error)

    @property
    def settled(self) -> bool:
        return bool(self.calls)


def run_until(cluster: Cluster, outcome: Outcome, limit_ms: int = 5_000) -> None:
    waited = 0
    while not outcome.settled and waited < limit_ms:
        cluster.run(10)
        waited += 10
    assert len(outcome.calls) == 1, f"seed={cluster.seed} calls={outcome.calls}"


def settled_cluster(seed: int) -> Cluster:
    cluster = Cluster(seed, NAMES, None, gossip=SLOW_GOSSIP)
    cluster.run(1_000)  # membership settles
    return cluster


def values(node: Node, key: str) -> list[object]:
    return [window.value for window in node.read_key(key)]


def total(node: Node, key: str) -> float:
    return sum(float(window.value) for window in node.read_key(key))  # type: ignore[arg-type]


def test_majority_sizes() -> None:
    assert [majority(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


def test_a_quorum_read_sees_a_quorum_write_that_gossip_has_not_spread() -> None:
    for seed in range(3):
        cluster = settled_cluster(seed)
        network = cluster.network
        # The write reaches only a, b and c (a majority of five).
        network.set_faults(FaultOptions().partitioned(["a", "b", "c"], ["d", "e"]))
        wrote = Outcome()
        result = cluster.nodes["a"].add_quorum("hits", "counter", 7, wrote)
        assert result.accepted == 1
        run_until(cluster, wrote)
        assert wrote.calls == [None], f"seed={seed}"
        # e now reaches b, c and d but not a; it has never seen the write. b's and c's
        # answers are held back at first: d's answer alone must not complete the read.
        reachable = FaultOptions().partitioned(["b", "c", "d", "e"], ["a"])
        network.set_faults(reachable.clogged("b", "e").clogged("c", "e"))
        assert values(cluster.nodes["e"], "hits") == [], f"seed={seed}"
        read = Outcome()
        cluster.nodes["e"].read_quorum("hits", read)
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
    cluster.nodes["a"].add_quorum("hits", "counter", 3, wrote)
    run_until(cluster, wrote)
    error = wrote.calls[0]
    assert isinstance(error, UnavailableError)
    assert "2 of the 3 nodes" in str(error)
    # Not undone: applied at a (and b, which acknowledged), and it spreads once healed.
    assert values(cluster.nodes["a"], "hits") == [3.0]
    assert values(cluster.nodes["b"], "hits") == [3.0]
    read = Outcome()
    cluster.nodes["b"].read_quorum("hits", read)
    run_until(cluster, read)
    assert isinstance(read.calls[0], UnavailableError)
    # The majority side serves both.
    wrote_majority = Outcome()
    cluster.nodes["c"].add_quorum("hits", "counter", 4, wrote_majority)
    run_until(cluster, wrote_majority)
    assert wrote_majority.calls == [None]
    cluster.network.set_faults(FaultOptions())
    read_after_heal = Outcome()
    cluster.nodes["e"].read_quorum("hits", read_after_heal)
    run_until(cluster, read_after_heal)
    assert read_after_heal.calls == [None]
    assert total(cluster.nodes["e"], "hits") == 7.0  # both writes, in whatever windows


def test_quorum_writes_of_every_kind_and_set_removal_reach_the_reader() -> None:
    cluster = settled_cluster(9)
    writes = [
        ("latency", "distribution", 12.5),
        ("queue", "gauge", 3.0),
        ("users", "distinct", "u1"),
        ("peak", "max", 9.0),
        ("members", "set", "x"),
    ]
    for key, kind, value in writes:
        wrote = Outcome()
        cluster.nodes["a"].add_quorum(key, kind, value, wrote)
        run_until(cluster, wrote)
        assert wrote.calls == [None], key
    removed = Outcome()
    assert cluster.nodes["a"].remove_quorum("members", "x", removed)
    run_until(cluster, removed)
    assert removed.calls == [None]
    for key, _, _ in writes:
        read = Outcome()
        cluster.nodes["d"].read_quorum(key, read)
        run_until(cluster, read)
        assert read.calls == [None], key
        assert values(cluster.nodes["d"], key) == values(cluster.nodes["a"], key), key


def test_a_single_node_confirms_at_once_and_a_write_not_applied_sends_nothing() -> None:
    cluster = Cluster(2, ["solo"], None, gossip=SLOW_GOSSIP)
    outcome = Outcome()
    cluster.nodes["solo"].add_quorum("hits", "counter", 1, outcome)
    assert outcome.calls == [None]
    five = settled_cluster(4)
    late = Outcome()
    sent_before = five.nodes["a"].counters["frames_sent"]
    result = five.nodes["a"].add_quorum("hits", "counter", 1, late, timestamp_ms=0)
    assert (result.accepted, result.late) == (0, 1)
    assert late.calls == [None]
    assert five.nodes["a"].counters["frames_sent"] == sent_before


def test_malformed_and_stray_quorum_frames_are_counted_and_change_nothing() -> None:
    cluster = settled_cluster(6)
    node = cluster.nodes["b"]
    before = node.quorum.counters["malformed"]
    bad = [
        wire.encode(wire.Tag.QUORUM_WRITE, "not a row"),
        wire.encode(wire.Tag.QUORUM_WRITE, [1, {"not": "a delta"}]),
        wire.encode(wire.Tag.QUORUM_READ, [2, 17]),
        wire.encode(wire.Tag.QUORUM_READ, ["id", "hits"]),
    ]
    for frame in bad:
        node.quorum.step("a", frame)
    assert node.quorum.counters["malformed"] == before + len(bad)
    # Answers to requests this node never made are ignored.
    node.quorum.step("a", wire.encode(wire.Tag.QUORUM_ACK, [99, None]))
    assert node.quorum.outstanding == 0
    assert values(node, "hits") == []


@pytest.mark.parametrize("loss", [0.2, 0.5])
def test_writes_confirmed_under_loss_are_all_seen_by_quorum_reads(loss: float) -> None:
    cluster = settled_cluster(12)
    cluster.network.set_faults(FaultOptions(drop_probability=loss, duplicate_probability=0.1))
    confirmed = 0.0
    for round_number in range(12):
        writer = NAMES[round_number % len(NAMES)]
        wrote = Outcome()
        cluster.nodes[writer].add_quorum("hits", "counter", 1, wrote)
        run_until(cluster, wrote, limit_ms=10_000)
        if wrote.calls == [None]:
            confirmed += 1
    assert confirmed >= 1, f"seed=12 loss={loss}"
    for reader in NAMES:
        read = Outcome()
        cluster.nodes[reader].read_quorum("hits", read)
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
        writer.add_quorum(f"service.{index:05d}.requests#host:h{index % 7}", "counter", 1, outcome)
    frames_before = writer.counters["frames_sent"]
    run_until(cluster, outcomes[-1])
    assert all(outcome.calls == [None] for outcome in outcomes)
    assert writer.quorum.counters["batches_sent"] == 1
    # One batch, several frames per member (4 members), so several parts each.
    assert writer.counters["frames_sent"] - frames_before > 3 * 4
    holders = [
        name
        for name, node in cluster.nodes.items()
        if len(node.store.kind_keys["counter"]) == len(outcomes)
    ]
    assert len(holders) >= majority(len(NAMES)), holders
