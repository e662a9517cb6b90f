"""The agent's log: events derived by comparing what nodes report, one line each."""

from __future__ import annotations

import io
import json
import logging
import random

import pytest

from crdtstream.agent.events import ClusterObserver, configure_logging, log_event
from crdtstream.clock import ManualClock
from crdtstream.config import PolicyRule, RaftConfig
from crdtstream.node import Node, NodeConfig, PeerAddress
from tests.node.test_node_simulation import STEP_MS, WINDOW, Cluster
from transports.memory import FaultOptions, MemoryNetwork, memory_address


def _events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, object]]]:
    return [(record.getMessage(), getattr(record, "fields", {})) for record in caplog.records]


def test_members_joining_dying_and_refused_peers_are_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
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
    observer = ClusterObserver(cluster.nodes["a"])
    caplog.set_level(logging.INFO, logger="crdtstream")
    for _ in range(30):
        cluster.run(100)
        observer.observe()
    events = _events(caplog)
    joined = [fields for message, fields in events if message == "member joined"]
    assert [fields["member"] for fields in joined] == ["b"]
    refused = [fields for message, fields in events if message.startswith("peer refused")]
    assert refused == [
        {
            "peer": "c",
            "reason": "rules_mismatch",
            "peer_rules_fingerprint": cluster.nodes["c"].engine.policy.fingerprint,
            "our_rules_fingerprint": cluster.nodes["a"].engine.policy.fingerprint,
        }
    ]
    caplog.clear()
    crashed = cluster.nodes.pop("b")
    crashed.close(leave=False)
    for _ in range(100):
        cluster.run(100)
        observer.observe()
    changes = [
        (message, fields["member"]) for message, fields in _events(caplog) if "member" in fields
    ]
    assert ("member suspected", "b") in changes
    assert changes[-1] == ("member dead", "b")
    assert len(changes) == len(set(changes))  # each change once


def test_a_raft_leader_change_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(1_000_000)
    network = MemoryNetwork(3, FaultOptions())
    address = memory_address("solo")
    config = NodeConfig(
        node_id="solo",
        listen_address=address,
        raft=RaftConfig(tick_ms=10),
        raft_voters=(PeerAddress("solo", address),),
    )
    node = Node(config, network.endpoint("solo"), clock, random.Random(3))
    observer = ClusterObserver(node)
    caplog.set_level(logging.INFO, logger="crdtstream")
    for _ in range(200):
        clock.advance(10)
        network.advance(10)
        node.pump()
        observer.observe()
    leaders = [fields for message, fields in _events(caplog) if message == "raft leader changed"]
    assert [fields["leader"] for fields in leaders] == ["solo"]
    assert observer.counters() == {"leader_changes": 1}


def test_json_log_lines_carry_the_event_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger("crdtstream")
    saved = (list(root.handlers), root.level, root.propagate)
    try:
        configure_logging("info", "json")
        log_event(logging.INFO, "member joined", member="b", address="tcp://h:1")
        log_event(logging.DEBUG, "not shown")
    finally:
        root.handlers[:], root.level, root.propagate = saved
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    document = json.loads(lines[0])
    assert (document["message"], document["member"], document["level"]) == (
        "member joined",
        "b",
        "info",
    )
