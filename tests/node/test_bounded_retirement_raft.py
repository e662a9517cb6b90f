"""Retiring a removed member's bounded rows through the Raft log, on real nodes.

Three Raft voters and one non-voter share a bounded quota on the simulated network. A voter
dies holding rights; an operator removes it and proposes its retirement: the proposer gathers
every live node's copy of the dead member's rows, the decision commits through the log, every
voter applies it, the heir (a live voter) re-issues the dead member's rights, and the whole
quota is spent, exactly, by the survivors (the non-voter, which never applies decisions,
included). One decision per member commits.
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
from crdtstream.errors import RefusedError, UnavailableError
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
    def __init__(self, seed: int, voter_names: tuple[str, ...] = tuple(VOTERS)) -> None:
        self.clock = ManualClock(1_000_000)
        self.network = MemoryNetwork(seed, FaultOptions())
        rng = random.Random(seed)
        voters = tuple(PeerAddress(v, memory_address(v)) for v in voter_names)
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
    ticket = b.engine.retire_bounded_member("c")
    cluster.run_until(ticket)
    assert ticket.result().value == 1
    again = a.engine.retire_bounded_member("c")  # one decision per member commits
    cluster.run_until(again)
    assert isinstance(again.error, RefusedError)
    assert "retired already" in str(again.error)
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


def _run_until_status(cluster: RaftBoundedCluster, member: str, status: str) -> None:
    """Run until node ``a`` sees ``member`` in ``status``."""
    members = cluster.nodes["a"].engine.gossip.membership.members
    for _ in range(100):
        if members[member].status == status:
            return
        cluster.run(100)
    pytest.fail(f"a never saw {member} {status}: {members[member].status}")


def _consumed(tickets: list[Ticket]) -> int:
    assert all(t.done for t in tickets)
    return sum(1 for t in tickets if t.error is None)


def test_the_retirement_freezes_the_rows_at_the_newest_copy_any_live_node_holds() -> None:
    """The dead member's last consumptions reached only ``d``: the proposer's own copy is
    older. Retired at that copy, the heir would re-issue rights already used and the
    survivors would consume past the limit."""
    cluster = RaftBoundedCluster(5)
    a, c, d = (cluster.nodes[name] for name in ("a", "c", "d"))
    assert c.engine.write(KEY, "consume", 4).done
    cluster.run(500)
    cut = FaultOptions()
    for source, destination in (("c", "a"), ("c", "b"), ("d", "a"), ("d", "b")):
        cut = cut.blocked(source, destination)
    cluster.network.set_faults(cut)
    late = [c.engine.write(KEY, "consume", 1) for _ in range(3)]
    cluster.run(300)
    assert _consumed(late) == 3
    row = c.engine.bounded.replica
    window = cluster.clock.now_ms() // WINDOW_MS
    assert d.engine.bounded._windows[(KEY, window)].counter.spent_by(row) == 7
    assert a.engine.bounded._windows[(KEY, window)].counter.spent_by(row) == 4
    cluster.nodes.pop("c").transport.close()  # c dies; only d saw its last 3
    cluster.network.set_faults(FaultOptions())
    assert a.engine.remove_member("c", force=True)
    ticket = a.engine.retire_bounded_member("c")
    cluster.run_until(ticket)
    assert ticket.result().value == 1
    cluster.run(300)
    counter = a.engine.bounded._windows[(KEY, window)].counter
    held = SHARE + counter.received_by(row) - 7  # peers passed the busy c spare rights
    reclaimed = a.engine.bounded.counters.rights_reclaimed
    assert reclaimed == held, "the heir re-issued rights the dead member had used"
    survivors = [cluster.nodes[name] for name in ("a", "b", "d")]
    tickets = [node.engine.write(KEY, "consume", 1) for node in survivors for _ in range(LIMIT)]
    cluster.run(4_000)
    assert 7 + _consumed(tickets) == LIMIT
    for name in ("a", "b", "d"):
        assert cluster.view(name)["value"] == LIMIT, name


def test_a_live_node_that_does_not_answer_leaves_the_retirement_unavailable() -> None:
    cluster = RaftBoundedCluster(6)
    a, c = cluster.nodes["a"], cluster.nodes["c"]
    assert c.engine.write(KEY, "consume", 2).done
    cluster.run(500)
    cluster.nodes.pop("c").transport.close()
    assert a.engine.remove_member("c", force=True)
    cluster.network.set_faults(FaultOptions().blocked("d", "a"))  # d's answers are lost
    ticket = a.engine.retire_bounded_member("c")
    cluster.run_until(ticket, deadline_ms=8_000)
    assert isinstance(ticket.error, UnavailableError)
    assert "['d']" in str(ticket.error)
    assert a.engine.bounded.counters.gatherings_failed == 1
    assert cluster.nodes["d"].engine.bounded.counters.row_copies_sent >= 1
    # A member dead to a may hold the newest copy: nothing is retired without it.
    cluster.network.set_faults(FaultOptions().isolated("d"))
    _run_until_status(cluster, "d", "dead")
    refused = a.engine.retire_bounded_member("c")
    assert isinstance(refused.error, RefusedError)
    assert "dead" in str(refused.error)
    cluster.network.set_faults(FaultOptions())
    _run_until_status(cluster, "d", "alive")  # d refutes its death
    ticket = a.engine.retire_bounded_member("c")
    cluster.run_until(ticket)
    assert ticket.result().value == 1
    cluster.run(200)
    for name in ("a", "b"):
        assert cluster.nodes[name].engine.bounded.counters.rows_retired == 1, name


def test_the_heir_is_a_live_raft_voter_even_below_a_non_voter() -> None:
    """``a`` has the lowest id but is not a voter, so it never applies decisions: an heir
    named ``a`` would re-issue nothing and the dead member's rights would stay stranded."""
    cluster = RaftBoundedCluster(7, voter_names=("b", "c", "d"))
    c = cluster.nodes["c"]
    assert c.engine.write(KEY, "consume", 3).done
    cluster.run(500)
    cluster.nodes.pop("c").transport.close()
    a = cluster.nodes["a"]
    assert a.engine.remove_member("c", force=True)
    ticket = a.engine.retire_bounded_member("c")  # proposed by the non-voter
    cluster.run_until(ticket)
    assert ticket.result().value == 1
    cluster.run(300)
    assert cluster.nodes["b"].engine.bounded.counters.rights_reclaimed == SHARE - 3
    assert a.engine.bounded.counters.rows_retired == 0
    survivors = [cluster.nodes[name] for name in ("a", "b", "d")]
    tickets = [node.engine.write(KEY, "consume", 1) for node in survivors for _ in range(LIMIT)]
    cluster.run(4_000)
    assert 3 + _consumed(tickets) == LIMIT
