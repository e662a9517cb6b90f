"""Strong keys on the Paxos backend through the real driver (Node, Engine) on the simulated
network: routing by policy, quotas, idempotency, a node cut off, restarts from disk."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from crdtstream.agent.settings import parse_policy
from crdtstream.clock import ManualClock
from crdtstream.config import PolicyRule, RaftConfig, WindowConfig
from crdtstream.engine import Answer
from crdtstream.errors import ConfigError, UnavailableError
from crdtstream.node import Node, NodeConfig, PeerAddress
from crdtstream.paxos.node import proposer_ranking
from crdtstream.policy import Policy
from crdtstream.raft.state_machine import StateMachine
from tests.node.malformed import assert_no_malformed
from tests.node.test_strong_simulation import Outcomes
from transports.memory import FaultOptions, MemoryNetwork, memory_address

STEP_MS = 10
VOTERS = ["a", "b", "c"]
WINDOW = WindowConfig(size_ms=60_000, allowed_lateness_ms=60_000, retention_windows=10)
POLICY = (
    PolicyRule("quota.*", "strong", "paxos"),
    PolicyRule("ledger.*", "strong"),
)


class PaxosCluster:
    def __init__(self, seed: int, names: list[str], root: Path | None = None) -> None:
        self.clock = ManualClock(1_000_000)
        self.network = MemoryNetwork(seed, FaultOptions(delay_ms_min=1, delay_ms_max=3))
        self.rng = random.Random(seed)
        self.names = names
        self.root = root
        self.nodes: dict[str, Node] = {}
        for name in names:
            self.start(name)

    def start(self, name: str) -> Node:
        voters = tuple(PeerAddress(v, memory_address(v)) for v in VOTERS)
        config = NodeConfig(
            node_id=name,
            listen_address=memory_address(name),
            peers=tuple(PeerAddress(o, memory_address(o)) for o in self.names if o != name),
            window=WINDOW,
            raft=RaftConfig(tick_ms=STEP_MS),
            raft_voters=voters,
            policy=POLICY,
            strong_timeout_ms=1_000,
            tick_interval_ms=STEP_MS,
            data_dir=None if self.root is None else self.root / name,
        )
        endpoint = self.network.endpoint(name)
        node = Node(config, endpoint, self.clock, random.Random(self.rng.getrandbits(64)))
        self.nodes[name] = node
        return node

    def run(self, duration_ms: int) -> None:
        for _ in range(duration_ms // STEP_MS):
            self.clock.advance(STEP_MS)
            self.network.advance(STEP_MS)
            for node in self.nodes.values():
                node.pump()
        assert_no_malformed({name: node.status() for name, node in self.nodes.items()})


def values(answer: object) -> list[object]:
    assert isinstance(answer, Answer)
    return [window.value for window in answer.windows]


def test_conditional_adds_from_every_node_never_exceed_the_limit_and_skip_the_raft_log() -> None:
    cluster = PaxosCluster(1, [*VOTERS, "d"])  # d is no acceptor: it only proposes
    outcomes = Outcomes()
    for index in range(12):
        node = cluster.nodes[["a", "b", "c", "d"][index % 4]]
        ticket = node.engine.write("quota.api", "conditional_add", 1, limit=10)
        outcomes.record(f"w{index}", ticket)
    cluster.run(2_000)
    assert outcomes.errors == {}
    applied = [outcomes.answers[f"w{i}"].applied for i in range(12)]  # type: ignore[attr-defined]
    assert applied.count(True) == 10
    for name, node in cluster.nodes.items():
        outcomes.record(f"read-{name}", node.engine.read("quota.api"))
    cluster.run(1_000)
    for name in cluster.nodes:
        assert values(outcomes.answers[f"read-{name}"]) == [10], name
    for name in VOTERS:
        strong = cluster.nodes[name].engine.strong
        machine = getattr(strong, "machine", None)
        assert isinstance(machine, StateMachine)
        assert machine.read("quota.api") is None, "a paxos key went through the Raft log"
    # Every node forwarded to the key's preferred proposer, which ran every round.
    leader = proposer_ranking("quota.api", VOTERS)[0]
    statuses = {name: node.engine.status()["paxos"] for name, node in cluster.nodes.items()}
    assert statuses[leader]["rounds_succeeded"] >= 1
    assert statuses[leader]["forwards_served"] == 9 + 3  # the others' writes and reads
    for name, status in statuses.items():
        if name != leader:
            assert status["rounds_started"] == 0, name
            assert status["operations_forwarded"] == status["forwards_answered"] > 0, name


def test_a_raft_key_next_to_paxos_keys_still_goes_through_raft() -> None:
    cluster = PaxosCluster(2, VOTERS)
    cluster.run(1_500)  # a Raft leader is elected
    outcomes = Outcomes()
    outcomes.record("raft", cluster.nodes["a"].engine.write("ledger.x", "add", 2))
    outcomes.record("paxos", cluster.nodes["a"].engine.write("quota.x", "add", 3))
    cluster.run(1_000)
    assert outcomes.errors == {}
    machines = [getattr(cluster.nodes[n].engine.strong, "machine", None) for n in VOTERS]
    assert all(isinstance(m, StateMachine) and m.read("ledger.x") for m in machines)


def test_an_idempotency_key_retried_at_another_node_is_applied_once() -> None:
    cluster = PaxosCluster(3, VOTERS)
    outcomes = Outcomes()
    first = cluster.nodes["a"].engine.write("quota.jobs", "add", 5, idempotency_key="job-1")
    outcomes.record("first", first)
    cluster.run(500)
    retry = cluster.nodes["c"].engine.write("quota.jobs", "add", 5, idempotency_key="job-1")
    outcomes.record("retry", retry)
    cluster.run(500)
    outcomes.record("read", cluster.nodes["b"].engine.read("quota.jobs"))
    cluster.run(500)
    assert outcomes.answers["first"] == outcomes.answers["retry"]
    assert values(outcomes.answers["read"]) == [5]


def test_a_cut_off_node_fails_with_an_unknown_or_unapplied_outcome_and_the_rest_carry_on() -> None:
    """No leader, so no election gap: the two connected nodes keep serving at once."""
    cluster = PaxosCluster(4, VOTERS)
    cluster.run(200)
    cluster.network.set_faults(FaultOptions(delay_ms_min=1, delay_ms_max=3).isolated("a"))
    outcomes = Outcomes()
    outcomes.record("stranded", cluster.nodes["a"].engine.write("quota.x", "add", 1))
    outcomes.record("carry-on", cluster.nodes["b"].engine.write("quota.x", "add", 2))
    cluster.run(200)
    assert outcomes.answers["carry-on"].value == 2  # type: ignore[attr-defined]
    cluster.run(1_500)
    error = outcomes.errors.get("stranded")
    assert isinstance(error, UnavailableError)
    assert "timed out" in str(error)


def test_acceptor_records_on_disk_survive_a_restart_of_every_node(tmp_path: Path) -> None:
    cluster = PaxosCluster(5, VOTERS, tmp_path)
    outcomes = Outcomes()
    outcomes.record("w", cluster.nodes["a"].engine.write("quota.disk", "add", 7))
    cluster.run(500)
    assert outcomes.answers["w"].value == 7  # type: ignore[attr-defined]
    for name in VOTERS:
        cluster.nodes[name].close(leave=False)
    restarted = PaxosCluster(6, VOTERS, tmp_path)
    outcomes.record("after", restarted.nodes["b"].engine.read("quota.disk"))
    restarted.run(1_000)
    assert values(outcomes.answers["after"]) == [7]


def test_the_backend_is_part_of_the_policy_and_its_fingerprint() -> None:
    raft = Policy((PolicyRule("quota.*", "strong"),))
    paxos = Policy((PolicyRule("quota.*", "strong", "paxos"),))
    assert raft.fingerprint != paxos.fingerprint
    assert (paxos.mode_of("quota.a"), paxos.backend_of("quota.a")) == ("strong", "paxos")
    assert raft.backend_of("quota.a") == "raft"
    rules = parse_policy([{"pattern": "quota.*", "mode": "strong", "backend": "paxos"}])
    assert rules == (PolicyRule("quota.*", "strong", "paxos"),)
    with pytest.raises(ConfigError):
        parse_policy([{"pattern": "quota.*", "mode": "strong", "backend": "zab"}])
    with pytest.raises(ConfigError):
        PolicyRule("events.*", "eventual", "paxos")
