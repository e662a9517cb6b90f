"""Nodes, the real driver code, on the simulated network with a manual clock."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from crdtstream.clock import ManualClock
from crdtstream.config import GossipConfig, MembershipConfig, PolicyRule, WindowConfig
from crdtstream.node import Node, NodeConfig, PeerAddress
from tests.node.engine_calls import windows, write
from tests.node.malformed import assert_no_malformed
from transports.memory import FaultOptions, MemoryNetwork, memory_address

WINDOW = WindowConfig(size_ms=1_000, allowed_lateness_ms=500, retention_windows=30)
GOSSIP = GossipConfig(interval_ms=50, fanout=2)
STEP_MS = 10


def _config(
    node_id: str,
    others: list[str],
    data_dir: Path | None,
    snapshot_interval_ms: int = 200,
    window: WindowConfig = WINDOW,
    gossip: GossipConfig = GOSSIP,
    policy: tuple[PolicyRule, ...] = (),
    durability: str = "fsync",
) -> NodeConfig:
    return NodeConfig(
        node_id=node_id,
        listen_address=memory_address(node_id),
        peers=tuple(PeerAddress(other, memory_address(other)) for other in others),
        data_dir=data_dir,
        window=window,
        gossip=gossip,
        membership=MembershipConfig.local(),
        snapshot_interval_ms=snapshot_interval_ms,
        tick_interval_ms=STEP_MS,
        policy=policy,
        durability=durability,
    )


class Cluster:
    """Nodes sharing one network and one manual clock."""

    def __init__(
        self,
        seed: int,
        names: list[str],
        root: Path | None,
        snapshot_interval_ms: int = 200,
        window: WindowConfig = WINDOW,
        gossip: GossipConfig = GOSSIP,
        policy: tuple[PolicyRule, ...] = (),
        durability: str = "fsync",
    ) -> None:
        self.seed = seed
        self.durability = durability
        self.policy = policy
        self.gossip = gossip
        self.snapshot_interval_ms = snapshot_interval_ms
        self.window = window
        self.rng = random.Random(seed)
        self.clock = ManualClock(1_000_000)
        self.network = MemoryNetwork(seed, FaultOptions())
        self.names = names
        self.root = root
        self.nodes: dict[str, Node] = {}
        # A test that feeds nodes bad frames on purpose sets this; every other run must count
        # no malformed frame at all.
        self.corrupts_frames = False
        for name in names:
            self.start(name)

    def start(self, name: str) -> Node:
        data_dir = None if self.root is None else self.root / name
        others = [other for other in self.names if other != name]
        node = Node(
            _config(
                name,
                others,
                data_dir,
                self.snapshot_interval_ms,
                self.window,
                self.gossip,
                self.policy,
                self.durability,
            ),
            self.network.endpoint(name),
            self.clock,
            random.Random(self.rng.getrandbits(64)),
        )
        self.nodes[name] = node
        return node

    def run(self, duration_ms: int) -> None:
        for _ in range(duration_ms // STEP_MS):
            self.clock.advance(STEP_MS)
            self.network.advance(STEP_MS)
            for node in self.nodes.values():
                node.pump()
        if not self.corrupts_frames:
            statuses = {name: node.status() for name, node in self.nodes.items()}
            assert_no_malformed(statuses, f"seed={self.seed}")

    def totals(self, key: str) -> dict[str, dict[int, object]]:
        return {
            name: {value.start_ms: value.value for value in windows(node, key)}
            for name, node in self.nodes.items()
        }


def test_three_nodes_converge_to_the_exact_sums_under_loss() -> None:
    seed = 7
    cluster = Cluster(seed, ["a", "b", "c"], None)
    cluster.network.set_faults(FaultOptions(drop_probability=0.3, duplicate_probability=0.1))
    expected: dict[int, float] = {}
    rng = random.Random(seed)
    for _ in range(40):
        name = rng.choice(cluster.names)
        amount = rng.randint(1, 9)
        result = write(cluster.nodes[name], "hits", "add", amount)
        assert result.accepted == 1, f"seed={seed}"
        start = cluster.clock.now_ms() // WINDOW.size_ms * WINDOW.size_ms
        expected[start] = expected.get(start, 0) + amount
        cluster.run(rng.choice([0, 10, 50]))
    cluster.network.set_faults(FaultOptions())
    cluster.run(3_000)
    totals = cluster.totals("hits")
    for name in cluster.names:
        assert totals[name] == expected, f"seed={seed} node={name}"


def test_windows_become_final_everywhere_once_watermarks_pass() -> None:
    cluster = Cluster(11, ["a", "b", "c"], None)
    write(cluster.nodes["a"], "hits", "add", 5)
    cluster.run(4_000)
    for name, node in cluster.nodes.items():
        values = windows(node, "hits")
        assert [v.value for v in values] == [5.0], name
        assert all(v.final for v in values), name


def test_restart_with_data_directory_keeps_and_resumes(tmp_path: Path) -> None:
    cluster = Cluster(3, ["a", "b"], tmp_path)
    write(cluster.nodes["a"], "hits", "add", 4)
    cluster.run(500)
    replica = cluster.nodes["a"].identity.replica
    cluster.nodes.pop("a").close()
    restarted = cluster.start("a")
    assert restarted.identity.resumed
    assert restarted.identity.replica == replica
    write(restarted, "hits", "add", 6)
    cluster.run(2_000)
    for name, node in cluster.nodes.items():
        assert sum(float(str(v.value)) for v in windows(node, "hits")) == 10.0, name


def test_crash_without_log_writes_under_a_new_replica(tmp_path: Path) -> None:
    cluster = Cluster(5, ["a", "b"], tmp_path, durability="none")
    write(cluster.nodes["a"], "hits", "add", 4)
    cluster.run(1_000)  # gossiped to b and snapshotted
    old = cluster.nodes.pop("a")
    old.transport.close()  # a crash: no final snapshot, no clean mark
    restarted = cluster.start("a")
    assert not restarted.identity.resumed
    assert restarted.identity.replica != old.identity.replica
    write(restarted, "hits", "add", 6)
    cluster.run(2_000)
    for name, node in cluster.nodes.items():
        assert sum(float(str(v.value)) for v in windows(node, "hits")) == 10.0, name


def test_crash_with_log_resumes_and_keeps_writes_not_yet_gossiped(tmp_path: Path) -> None:
    cluster = Cluster(5, ["a", "b"], tmp_path, snapshot_interval_ms=60_000)
    write(cluster.nodes["a"], "hits", "add", 4)
    cluster.run(1_000)  # gossiped to b; no snapshot since
    write(cluster.nodes["a"], "hits", "add", 3)  # acknowledged, never gossiped
    old = cluster.nodes.pop("a")
    old.transport.close()  # a crash: no final snapshot, no clean mark
    restarted = cluster.start("a")
    assert restarted.identity.resumed
    assert restarted.identity.replica == old.identity.replica
    write(restarted, "hits", "add", 6)
    cluster.run(2_000)
    for name, node in cluster.nodes.items():
        assert sum(float(str(v.value)) for v in windows(node, "hits")) == 13.0, name


def test_the_key_catalog_spreads_to_every_node() -> None:
    cluster = Cluster(13, ["a", "b", "c"], None)
    write(cluster.nodes["a"], "api.hits", "add", 1)
    write(cluster.nodes["c"], "api.latency", "observe", 12.5)
    cluster.run(4_000)
    for name, node in cluster.nodes.items():
        assert node.engine.catalog.keys() == {
            "api.hits": "counter",
            "api.latency": "distribution",
        }, name


def test_nodes_with_different_policies_refuse_each_other() -> None:
    cluster = Cluster(17, ["a", "b"], None)
    other = NodeConfig(
        node_id="c",
        listen_address=memory_address("c"),
        peers=(PeerAddress("a", memory_address("a")),),
        window=WINDOW,
        policy=(PolicyRule("quota.*", "strong"),),
        tick_interval_ms=STEP_MS,
    )
    cluster.nodes["c"] = Node(other, cluster.network.endpoint("c"), cluster.clock, random.Random(1))
    write(cluster.nodes["c"], "hits", "add", 5)
    cluster.run(3_000)
    assert cluster.nodes["a"].engine.gossip.membership.rules_mismatches == {
        "c": cluster.nodes["c"].engine.policy.fingerprint
    }
    assert windows(cluster.nodes["a"], "hits") == ()


def test_far_future_events_are_refused_and_later_writes_still_count() -> None:
    cluster = Cluster(19, ["a"], None)
    node = cluster.nodes["a"]
    answer = node.ingest_statsd([b"skew:1|c|T9999999999\nhits:2|c"])
    assert answer["future_rejected"] == 1
    assert answer["accepted"] == 1
    with pytest.raises(ValueError, match="ahead"):
        write(node, "hits", "add", 1, timestamp_ms=cluster.clock.now_ms() + 10**9)
    cluster.run(100)
    assert write(node, "hits", "add", 3).accepted == 1
    assert sum(float(str(v.value)) for v in windows(node, "hits")) == 5.0
