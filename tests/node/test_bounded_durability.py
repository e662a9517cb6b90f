"""Bounded keys across a crash, through the real driver and its local log.

Each node keeps its snapshot, identity and local log on a
:class:`~crdtstream.storage.local_log.MemoryDisk`, which holds only what was synced: dropping a
node object and starting a new one on its disk is a crash that loses every unsynced byte. With
the log, a consumption is answered only once logged, and a restarted node resumes its row: its
rights, spends and transfers intact. Without it (``durability = "none"``), a run takes a fresh
row.
"""

from __future__ import annotations

import random

import pytest

from crdtstream.clock import ManualClock
from crdtstream.config import PolicyRule
from crdtstream.engine import Ticket
from crdtstream.node import Node
from crdtstream.node.node import BOUNDED_SNAPSHOT_FILE
from crdtstream.storage.local_log import MemoryDisk
from tests.node.test_node_simulation import STEP_MS, _config
from transports.memory import FaultOptions, MemoryNetwork

NAMES = ["a", "b", "c"]
LIMIT = 30
SHARE = LIMIT // 3
WINDOW_MS = 60_000
KEY = "quota.api"
RULE = PolicyRule("quota.*", "bounded", limit=LIMIT, window_ms=WINDOW_MS, members=tuple(NAMES))


class DiskCluster:
    """Three nodes on one simulated network and clock, each on a disk that survives crashes."""

    def __init__(self, seed: int, *, snapshot_interval_ms: int, durability: str) -> None:
        self.rng = random.Random(seed)
        self.clock = ManualClock(1_000_000)
        self.network = MemoryNetwork(seed, FaultOptions())
        self.snapshot_interval_ms = snapshot_interval_ms
        self.durability = durability
        self.disks = {name: MemoryDisk() for name in NAMES}
        self.nodes: dict[str, Node] = {}
        for name in NAMES:
            self.start(name)
        # Nodes take their share of windows opening after they started: go past a boundary.
        self.run(WINDOW_MS - self.clock.now_ms() % WINDOW_MS + 200)

    def start(self, name: str, durability: str | None = None) -> Node:
        others = [other for other in NAMES if other != name]
        config = _config(
            name,
            others,
            None,
            self.snapshot_interval_ms,
            policy=(RULE,),
            durability=self.durability if durability is None else durability,
        )
        node = Node(
            config,
            self.network.endpoint(name),
            self.clock,
            random.Random(self.rng.getrandbits(64)),
            disk=self.disks[name],
        )
        self.nodes[name] = node
        return node

    def crash(self, name: str) -> None:
        """Drop the node without closing it: what it did not sync is gone."""
        node = self.nodes.pop(name)
        node.transport.close()

    def run(self, duration_ms: int) -> None:
        for _ in range(duration_ms // STEP_MS):
            self.clock.advance(STEP_MS)
            self.network.advance(STEP_MS)
            for node in self.nodes.values():
                node.pump()

    def view(self, name: str) -> dict[str, int]:
        value = self.nodes[name].engine.read(KEY).result().value
        assert isinstance(value, dict)
        return value


def _consume(node: Node, amount: int) -> Ticket:
    return node.engine.write(KEY, "consume", amount)


@pytest.mark.parametrize("snapshot_interval_ms", [60_000, 30])
def test_a_crash_loses_no_acknowledged_consumption_and_the_row_is_resumed(
    snapshot_interval_ms: int,
) -> None:
    cluster = DiskCluster(1, snapshot_interval_ms=snapshot_interval_ms, durability="fsync")
    a = cluster.nodes["a"]
    row = a.engine.bounded.replica
    # More than a's share: b or c transfer rights to it, and a spends them.
    first = _consume(a, SHARE - 2)
    assert not first.done, "answered before the log holds it"
    a.pump()
    assert first.result().accepted == SHARE - 2
    second = _consume(a, 6)
    cluster.run(400)
    assert second.result().accepted == 6
    rights_before = cluster.view("a")["rights"]
    third = _consume(a, 1)
    a.pump()  # answered: logged; crashed before any gossip round could carry it
    assert third.result().accepted == 1
    cluster.crash("a")
    if snapshot_interval_ms < 1_000:
        assert cluster.disks["a"].read(BOUNDED_SNAPSHOT_FILE), "no snapshot was taken"
    a = cluster.start("a")
    assert a.engine.bounded.replica == row, "the restarted node took a fresh row"
    assert a.engine.bounded.counters.windows_resumed >= 1
    assert cluster.view("a")["rights"] == rights_before - 1, "its rights are stranded"
    cluster.run(1_000)
    for name in NAMES:
        assert cluster.view(name)["value"] == SHARE - 2 + 6 + 1, name
    # The resumed rights serve a consumption at once, and the limit holds to the last unit.
    assert _consume(a, 1).done is False
    a.pump()
    spend_all = [_consume(cluster.nodes[name], 1) for name in NAMES for _ in range(LIMIT)]
    cluster.run(3_000)
    accepted = sum(ticket.result().accepted for ticket in spend_all if ticket.error is None)
    assert accepted == LIMIT - (SHARE - 2 + 6 + 1 + 1)
    for name in NAMES:
        assert cluster.view(name)["value"] == LIMIT, name


def test_without_the_log_a_crashed_run_leaves_its_row_behind() -> None:
    cluster = DiskCluster(2, snapshot_interval_ms=60_000, durability="none")
    a = cluster.nodes["a"]
    row = a.engine.bounded.replica
    assert _consume(a, 3).done, "without the log a consumption is answered at once"
    cluster.crash("a")
    a = cluster.start("a")
    assert a.engine.bounded.replica != row
    # Started mid-window: no share of its own, and the old row's rights are stranded.
    assert cluster.view("a")["rights"] == 0
    assert not cluster.disks["a"].read(BOUNDED_SNAPSHOT_FILE)


def test_a_run_without_the_log_keeps_the_logged_row_whole_for_a_later_logged_run() -> None:
    cluster = DiskCluster(3, snapshot_interval_ms=60_000, durability="fsync")
    a = cluster.nodes["a"]
    row = a.engine.bounded.replica
    ticket = _consume(a, 3)
    a.pump()
    assert ticket.result().accepted == 3
    cluster.crash("a")  # the consumption is in the log only
    a = cluster.start("a", durability="none")
    assert a.engine.bounded.replica != row
    assert cluster.view("a")["rights"] == 0
    cluster.run(200)
    cluster.crash("a")
    a = cluster.start("a", durability="fsync")
    assert a.engine.bounded.replica == row
    assert cluster.view("a")["rights"] == SHARE - 3, "the logged row was not resumed whole"
    cluster.run(1_000)
    for name in NAMES:
        assert cluster.view(name)["value"] == 3, name


@pytest.mark.parametrize("snapshot_interval_ms", [60_000, 30])
def test_a_restarted_node_applies_the_retirements_it_had_applied(
    snapshot_interval_ms: int,
) -> None:
    """Through the driver's log (and its snapshot): the decision is on the disk, so a node
    restarted when the strong log may no longer hold it still knows the row is retired."""
    cluster = DiskCluster(2, snapshot_interval_ms=snapshot_interval_ms, durability="fsync")
    c = cluster.nodes["c"]
    assert _consume(c, 2).done is False
    cluster.run(400)
    cluster.crash("c")
    a = cluster.nodes["a"]
    assert a.engine.remove_member("c", force=True)
    frame = a.engine.bounded_retirement("c").to_bytes()
    for name in ("a", "b"):
        assert cluster.nodes[name].engine.apply_bounded_retirement(frame) == 1
    cluster.run(400)
    reclaimed = a.engine.bounded.counters.rights_reclaimed
    assert reclaimed == SHARE - 2
    cluster.crash("a")
    if snapshot_interval_ms < 1_000:
        assert cluster.disks["a"].read(BOUNDED_SNAPSHOT_FILE), "no snapshot was taken"
    a = cluster.start("a")
    assert a.engine.bounded.counters.rows_retired == 1, "the decision was not on the disk"
    assert a.engine.apply_bounded_retirement(frame) == 0, "applied twice"
    cluster.run(400)
    assert a.engine.bounded.counters.rights_reclaimed == 0, "re-issued twice"
    spend_all = [_consume(cluster.nodes[name], 1) for name in ("a", "b") for _ in range(LIMIT)]
    cluster.run(3_000)
    accepted = sum(ticket.result().accepted for ticket in spend_all if ticket.error is None)
    assert accepted == LIMIT - 2
    for name in ("a", "b"):
        assert cluster.view(name)["value"] == LIMIT, name
