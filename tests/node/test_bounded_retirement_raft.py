"""Retiring a removed member's bounded rows through the Raft log, on real nodes.

Three Raft voters and one non-voter share a bounded quota on the simulated network. A voter
dies holding rights; an operator removes it and proposes its retirement: the decision commits
through the log, every voter applies it, the heir re-issues the dead member's rights, and the
whole quota is spent, exactly, by the survivors (the non-voter, which never applies decisions,
included).
"""

from __future__ import annotations

import asyncio
import random

import pytest
from aiohttp.test_utils import TestClient, TestServer

from crdtstream.agent.http import build_app
from crdtstream.cli import main
from crdtstream.clock import ManualClock
from crdtstream.config import GossipConfig, MembershipConfig, PolicyRule, RaftConfig
from crdtstream.engine import Ticket
from crdtstream.errors import RefusedError
from crdtstream.node import Node, NodeConfig, PeerAddress
from tests.node.malformed import assert_no_malformed
from transports.memory import FaultOptions, MemoryNetwork, memory_address

STEP_MS = 10
VOTERS = ["a", "b", "c"]
NAMES = [*VOTERS, "d"]
LIMIT = 40
SHARE = LIMIT // len(NAMES)
WINDOW_MS = 60_000
KEY = "quota.api"
RULE = PolicyRule("quota.*", "bounded", limit=LIMIT, window_ms=WINDOW_MS, members=tuple(NAMES))


class RaftBoundedCluster:
    def __init__(self, seed: int) -> None:
        self.clock = ManualClock(1_000_000)
        self.network = MemoryNetwork(seed, FaultOptions())
        rng = random.Random(seed)
        voters = tuple(PeerAddress(v, memory_address(v)) for v in VOTERS)
        self.nodes: dict[str, Node] = {}
        self.rng = rng
        self.configs: dict[str, NodeConfig] = {}
        for name in NAMES:
            config = self.configs[name] = NodeConfig(
                node_id=name,
                listen_address=memory_address(name),
                peers=tuple(PeerAddress(o, memory_address(o)) for o in NAMES if o != name),
                gossip=GossipConfig(interval_ms=50, fanout=2),
                membership=MembershipConfig.local(),
                raft=RaftConfig(tick_ms=STEP_MS),
                raft_voters=voters,
                policy=(RULE,),
                tick_interval_ms=STEP_MS,
            )
            endpoint = self.network.endpoint(name)
            self.nodes[name] = Node(
                config, endpoint, self.clock, random.Random(rng.getrandbits(64))
            )
        # Nodes take their share of windows opening after they started.
        self.run(WINDOW_MS - self.clock.now_ms() % WINDOW_MS + 500)

    def restart(self, name: str) -> Node:
        """Stop ``name`` and start it afresh (no data directory: its Raft log comes from the
        leader again)."""
        self.nodes.pop(name).close()
        node = Node(
            self.configs[name],
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
        assert_no_malformed({name: node.status() for name, node in self.nodes.items()})

    def run_until(self, ticket: Ticket, deadline_ms: int = 10_000) -> None:
        for _ in range(deadline_ms // STEP_MS):
            if ticket.done:
                return
            self.run(STEP_MS)
        pytest.fail("the ticket did not complete")

    def view(self, name: str) -> dict[str, int]:
        value = self.nodes[name].engine.read(KEY).result().value
        assert isinstance(value, dict)
        return value


def test_a_retirement_committed_through_raft_lets_the_survivors_spend_the_whole_quota() -> None:
    cluster = RaftBoundedCluster(3)
    a, b, c = (cluster.nodes[name] for name in VOTERS)
    assert cluster.view("c")["rights"] == SHARE
    assert c.engine.write(KEY, "consume", 4).done
    cluster.run(500)
    c.transport.close()  # c dies holding SHARE - 4 rights
    del cluster.nodes["c"]
    cluster.run(500)
    refused = a.engine.retire_bounded_member("c")
    assert isinstance(refused.error, RefusedError)
    assert "not removed" in str(refused.error)
    assert a.engine.remove_member("c", force=True)
    cluster.run(500)  # the removal spreads by gossip
    ticket = b.engine.retire_bounded_member("c", [a.engine.bounded.rows_of("c")])
    cluster.run_until(ticket)
    assert ticket.result().value == 1
    cluster.run(200)
    for name in ("a", "b"):
        assert cluster.nodes[name].engine.bounded.counters.rows_retired == 1, name
    assert a.engine.bounded.counters.rights_reclaimed == SHARE - 4
    survivors = [cluster.nodes[name] for name in ("a", "b", "d")]
    tickets = [node.engine.write(KEY, "consume", 1) for node in survivors for _ in range(LIMIT)]
    cluster.run(4_000)
    assert all(t.done for t in tickets)
    assert sum(1 for t in tickets if t.error is None) == LIMIT - 4
    for name in ("a", "b", "d"):
        assert cluster.view(name) == {"value": LIMIT, "limit": LIMIT, "rights": 0}, name
        counters = cluster.nodes[name].engine.bounded.counters
        assert counters.entries_over_limit == 0, name
        assert counters.retired_overspent == 0, name
    # A voter that starts afresh learns the decision from the leader's log too.
    b = cluster.restart("b")
    assert b.engine.bounded.counters.rows_retired == 0
    cluster.run(3_000)
    assert b.engine.bounded.counters.rows_retired == 1
    # The heir starting afresh applies the decision but re-issues nothing a second time: its
    # earlier run passed the rights to a row this run does not write.
    a = cluster.restart("a")
    cluster.run(3_000)
    assert a.engine.bounded.counters.rows_retired == 1
    assert a.engine.bounded.counters.rights_reclaimed == 0
    late = [node.engine.write(KEY, "consume", 1) for node in cluster.nodes.values()]
    cluster.run(2_000)
    assert all(t.error is not None for t in late)
    for name in ("a", "b", "d"):
        assert cluster.view(name)["value"] == LIMIT, name


async def _retire_over_the_command_line() -> None:
    cluster = RaftBoundedCluster(4)
    assert cluster.nodes["c"].engine.write(KEY, "consume", 1).done
    cluster.run(500)
    cluster.nodes.pop("c").transport.close()  # c dies holding the rest of its share
    cluster.run(500)
    b = cluster.nodes["b"]
    client = TestClient(TestServer(build_app(b)))
    await client.start_server()
    try:
        refused = await client.post("/v1/members/d/retire-bounded")  # d is alive
        assert refused.status == 409, await refused.text()
        url = str(client.make_url("/"))
        args = ["remove-member", "c", "--node", url, "--force", "--retire-bounded"]
        command = asyncio.create_task(asyncio.to_thread(main, args))
        for _ in range(1_000):  # pump the nodes while the command waits for the decision
            if command.done():
                break
            cluster.run(STEP_MS)
            await asyncio.sleep(0.001)
        assert await command == 0
    finally:
        await client.close()
    cluster.run(200)
    for name in ("a", "b"):
        assert cluster.nodes[name].engine.bounded.counters.rows_retired == 1, name
    assert cluster.nodes["a"].engine.bounded.counters.rights_reclaimed == SHARE - 1


def test_remove_member_with_retire_bounded_reissues_the_dead_members_share() -> None:
    asyncio.run(_retire_over_the_command_line())
