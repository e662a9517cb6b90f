"""Idempotency keys on quorum writes, through the real driver on the simulated network: a write
retried at every node, across a partition of its holder and across crashes of its holder before
and after it applied the write, is applied exactly once and answered with its first result."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from crdtstream.clock import ManualClock
from crdtstream.config import PolicyRule, RaftConfig, WindowConfig
from crdtstream.engine import Answer, Ticket
from crdtstream.engine.claims import CLAIM_PREFIX
from crdtstream.engine.strong import StrongReplica
from crdtstream.errors import RefusedError, UnavailableError
from crdtstream.node import Node, NodeConfig, PeerAddress
from tests.node.engine_calls import windows
from tests.node.malformed import assert_no_malformed
from transports.memory import FaultOptions, MemoryNetwork, memory_address

STEP_MS = 10
NAMES = ("a", "b", "c")
WINDOW = WindowConfig(size_ms=600_000, allowed_lateness_ms=60_000, retention_windows=4)
KEY = "q.orders"


class Cluster:
    """Three Raft voters with data directories (and ``extra`` nodes outside the voters);
    quorum keys under ``q.*``."""

    def __init__(self, seed: int, root: Path, extra: tuple[str, ...] = ()) -> None:
        self.clock = ManualClock(1_000_000)
        self.network = MemoryNetwork(seed, FaultOptions())
        self.rng = random.Random(seed)
        self.root = root
        self.names = (*NAMES, *extra)
        self.nodes: dict[str, Node] = {}
        for name in self.names:
            self.start(name)

    def config(self, name: str) -> NodeConfig:
        voters = tuple(PeerAddress(v, memory_address(v)) for v in NAMES)
        everyone = tuple(PeerAddress(n, memory_address(n)) for n in self.names)
        return NodeConfig(
            node_id=name,
            listen_address=memory_address(name),
            peers=tuple(p for p in everyone if p.node_id != name),
            window=WINDOW,
            raft=RaftConfig(tick_ms=STEP_MS),
            raft_voters=voters,
            policy=(PolicyRule("q.*", "quorum"),),
            strong_timeout_ms=2_000,
            quorum_timeout_ms=1_000,
            tick_interval_ms=STEP_MS,
            data_dir=self.root / name,
        )

    def start(self, name: str) -> None:
        endpoint = self.network.endpoint(name)
        self.nodes[name] = Node(
            self.config(name), endpoint, self.clock, random.Random(self.rng.getrandbits(64))
        )

    def crash(self, name: str) -> None:
        """Drop the node without closing it: only what it synced is left on its disk."""
        self.nodes.pop(name).transport.close()

    def run(self, duration_ms: int) -> None:
        for _ in range(duration_ms // STEP_MS):
            self.clock.advance(STEP_MS)
            self.network.advance(STEP_MS)
            for node in self.nodes.values():
                node.pump()

    def leader(self) -> str:
        (leader,) = [
            name
            for name, node in self.nodes.items()
            if isinstance(node.engine.strong, StrongReplica) and node.engine.strong.is_leader
        ]
        return leader

    def write(self, name: str, value: int = 5, key: str = "order-17") -> Ticket:
        return self.nodes[name].engine.write(KEY, "add", value, idempotency_key=key)

    def settle(self, ticket: Ticket, limit_ms: int = 5_000) -> Ticket:
        elapsed = 0
        while not ticket.done and elapsed < limit_ms:
            self.run(STEP_MS * 10)
            elapsed += STEP_MS * 10
        assert ticket.done, "no answer in time"
        return ticket

    def totals(self) -> dict[str, float]:
        self.run(2_000)  # gossip spreads every write
        return {
            name: float(sum(w.value for w in windows(node, KEY)))  # type: ignore[misc]
            for name, node in self.nodes.items()
        }


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    cluster = Cluster(7, tmp_path)
    cluster.run(2_000)  # a leader
    return cluster


def applied_at_a(cluster: Cluster) -> None:
    """Step until ``a`` holds the claim and applied the write, not yet confirmed."""
    holder = cluster.nodes["a"]
    for _ in range(200):
        cluster.run(STEP_MS)
        if holder.engine.claims.unsettled:
            return
    raise AssertionError("a never applied the write")


def _accepted(ticket: Ticket) -> int:
    answer = ticket.result()
    assert isinstance(answer, Answer)
    return answer.accepted


def test_a_retry_at_every_node_is_applied_once_with_the_first_answer(cluster: Cluster) -> None:
    first = cluster.settle(cluster.write("a"))
    assert _accepted(first) == 1
    for name in ("b", "c", "a"):
        assert _accepted(cluster.settle(cluster.write(name))) == 1, name
    assert cluster.totals() == dict.fromkeys(NAMES, 5.0)
    assert_no_malformed({name: node.status() for name, node in cluster.nodes.items()})


def test_the_key_with_another_body_is_refused_at_every_node(cluster: Cluster) -> None:
    cluster.settle(cluster.write("a"))
    for name in NAMES:
        error = cluster.settle(cluster.write(name, value=6)).error
        assert isinstance(error, RefusedError), name
        assert "used for another request" in str(error)
    assert cluster.totals() == dict.fromkeys(NAMES, 5.0)


def test_a_write_its_holder_could_not_confirm_is_confirmed_later_and_never_repeated(
    cluster: Cluster,
) -> None:
    ticket = cluster.write("a")
    applied_at_a(cluster)
    cluster.network.set_faults(FaultOptions().isolated("a"))
    assert isinstance(cluster.settle(ticket).error, UnavailableError)
    # The holder is cut off: a retry elsewhere may not apply the write again, and says why.
    retry = cluster.settle(cluster.write("b"))
    assert isinstance(retry.error, UnavailableError)
    assert "being applied by" in str(retry.error)
    cluster.network.set_faults(FaultOptions())
    cluster.run(3_000)  # a confirms the write at a majority, then settles the claim
    assert _accepted(cluster.settle(cluster.write("c"))) == 1
    assert cluster.totals() == dict.fromkeys(NAMES, 5.0)


def test_a_holder_that_crashed_after_applying_settles_the_write_when_it_returns(
    cluster: Cluster,
) -> None:
    holder = cluster.nodes["a"]
    cluster.write("a")
    applied_at_a(cluster)
    holder.make_durable()  # the sync every pump makes before anything leaves the node
    cluster.crash("a")  # before the write was confirmed and the claim settled
    retry = cluster.settle(cluster.write("b"))
    assert isinstance(retry.error, UnavailableError)
    cluster.start("a")
    assert cluster.nodes["a"].engine.claims.unsettled  # resumed from the marker
    cluster.run(3_000)
    assert not cluster.nodes["a"].engine.claims.unsettled
    for name in NAMES:
        assert _accepted(cluster.settle(cluster.write(name))) == 1, name
    assert cluster.totals() == dict.fromkeys(NAMES, 5.0)


def test_a_holder_that_crashed_before_applying_releases_the_claim_and_applies_once(
    cluster: Cluster,
) -> None:
    leader = cluster.leader()
    holder, other = [name for name in NAMES if name != leader]
    # The holder's claim reaches the leader and commits; no answer comes back to the holder.
    cluster.network.set_faults(FaultOptions().blocked(leader, holder).blocked(other, holder))
    cluster.write(holder)
    cluster.run(1_000)
    assert not cluster.nodes[holder].engine.claims.unsettled
    cluster.crash(holder)
    cluster.network.set_faults(FaultOptions())
    retry = cluster.settle(cluster.write(other))
    assert isinstance(retry.error, UnavailableError)
    assert "being applied by" in str(retry.error)
    cluster.start(holder)
    assert not any(
        name.startswith(CLAIM_PREFIX) for name in cluster.nodes[holder].engine.store.keys
    )
    # Only the holder can tell it never applied the write: back, it releases the claim, and
    # the retry elsewhere applies it.
    cluster.run(3_000)
    assert _accepted(cluster.settle(cluster.write(other))) == 1
    assert _accepted(cluster.settle(cluster.write(holder))) == 1
    assert cluster.totals() == dict.fromkeys(NAMES, 5.0)


def test_a_retry_at_the_holder_releases_its_unapplied_claim_at_once(cluster: Cluster) -> None:
    leader = cluster.leader()
    holder, other = [name for name in NAMES if name != leader]
    cluster.network.set_faults(FaultOptions().blocked(leader, holder).blocked(other, holder))
    cluster.write(holder)
    cluster.run(500)
    cluster.crash(holder)
    cluster.network.set_faults(FaultOptions())
    cluster.start(holder)
    # At once, before the holder's periodic release: the retry there releases and applies.
    assert _accepted(cluster.settle(cluster.write(holder))) == 1
    assert _accepted(cluster.settle(cluster.write(other))) == 1
    assert cluster.totals() == dict.fromkeys(NAMES, 5.0)


def test_keys_are_refused_where_a_claim_cannot_keep_the_promise(tmp_path: Path) -> None:
    cluster = Cluster(3, tmp_path)
    node = cluster.nodes["a"]
    error = node.engine.write("hits", "add", 1, idempotency_key="k").error
    assert isinstance(error, RefusedError)
    assert "eventual" in str(error)


def test_a_holder_outside_the_voters_finds_and_releases_its_unapplied_claim(
    tmp_path: Path,
) -> None:
    """A node outside the Raft voters has no copy of the idempotency table: back from a crash,
    it asks the table through Raft for its claims and releases those it never applied, so a
    retry elsewhere goes through without a retry ever coming to it."""
    cluster = Cluster(8, tmp_path, extra=("d",))
    cluster.run(2_000)
    others = [cluster.nodes[name] for name in NAMES]
    cluster.network.set_faults(FaultOptions().blocked("a", "d").blocked("b", "d").blocked("c", "d"))
    cluster.write("d")
    cluster.run(1_000)  # d's claim committed; its answer never came
    assert not cluster.nodes["d"].engine.claims.unsettled
    cluster.crash("d")
    cluster.network.set_faults(FaultOptions())
    retry = cluster.settle(cluster.write("a"))
    assert isinstance(retry.error, UnavailableError)
    assert "being applied by d" in str(retry.error)
    cluster.start("d")
    cluster.run(3_000)
    assert _accepted(cluster.settle(cluster.write("b"))) == 1
    assert _accepted(cluster.settle(cluster.write("d"))) == 1
    assert cluster.totals() == dict.fromkeys(cluster.names, 5.0)
    assert all(not node.engine.claims.unsettled for node in others)
