"""Crashes in the middle of traffic, over the node's real durability code.

Every node keeps its snapshot, identity and local write-ahead log on a
:class:`~crdtstream.storage.local_log.MemoryDisk`: the same log code as on files, and the disk
holds only what was synced, so dropping a node object and starting a new one on its disk is a
crash that loses every unsynced byte. Nodes crash at random points (also right after one of
their writes was acknowledged and before their next gossip round), stop cleanly, restart; the
network drops, duplicates and reorders. Afterwards every node reports exactly the sum of the
acknowledged eventual writes per key and window (0 lost, 0 counted twice), and quorum keys hold
every confirmed write and nothing that was never attempted.

``CRDTSTREAM_DURABILITY_SEEDS`` sets the number of seeds (default 30; run 200 or more locally).
A failure names its seed and the events of its run.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import pytest

from crdtstream.clock import ManualClock
from crdtstream.config import GossipConfig, MembershipConfig, PolicyRule, WindowConfig
from crdtstream.engine import Ticket
from crdtstream.node import Node, NodeConfig, PeerAddress
from crdtstream.storage.local_log import MemoryDisk
from tests.node.engine_calls import windows
from transports.memory import FaultOptions, MemoryNetwork, memory_address

SEEDS = range(int(os.environ.get("CRDTSTREAM_DURABILITY_SEEDS", "30")))
STEP_MS = 10
WINDOW = WindowConfig(size_ms=4_000, allowed_lateness_ms=500, retention_windows=30)
"""Windows longer than a crash and restart: writes before and after land in the same cells,
where a resumed replica slot missing its pre-crash writes would swallow new ones."""
EVENTUAL_KEYS = ("api.hits", "jobs.done")
QUORUM_KEYS = ("q.orders",)
POLICY = (PolicyRule("q.*", "quorum"),)
LOSSY = FaultOptions(
    drop_probability=0.2,
    duplicate_probability=0.1,
    reorder_probability=0.2,
    reorder_delay_ms_max=40,
    delay_ms_min=0,
    delay_ms_max=20,
)

Cell = tuple[str, int]


@dataclass
class Ledger:
    """What the clients were told: confirmed sums, and quorum writes of unknown fate."""

    confirmed: dict[Cell, float] = field(default_factory=dict)
    uncertain: dict[Cell, float] = field(default_factory=dict)
    acknowledged_writes: int = 0

    def record(self, ticket: Ticket, cell: Cell, amount: int, quorum: bool) -> None:
        def done(finished: Ticket) -> None:
            if finished.error is None and finished.result().accepted == 1:
                self.confirmed[cell] = self.confirmed.get(cell, 0) + amount
                self.acknowledged_writes += 1
            elif quorum:  # applied here, maybe spread: may or may not be counted in the end
                self.uncertain[cell] = self.uncertain.get(cell, 0) + amount

        ticket.on_done(done)


class Run:
    """One seeded run: a cluster on a lossy network whose nodes crash during traffic."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = ManualClock(1_000_000)
        self.network = MemoryNetwork(seed, FaultOptions())
        self.names = ["a", "b", "c"]
        self.snapshot_interval_ms = self.rng.choice([300, 1_000, 60_000])
        self.disks = {name: MemoryDisk() for name in self.names}
        self.nodes: dict[str, Node] = {}
        self.pending: dict[str, list[tuple[Ticket, Cell, int, bool]]] = {}
        self.ledger = Ledger()
        self.events: list[str] = []
        self.crashes_after_ack = 0
        self.resumed_after_crash = 0
        for name in self.names:
            self.start(name)

    def start(self, name: str) -> Node:
        config = NodeConfig(
            node_id=name,
            listen_address=memory_address(name),
            peers=tuple(
                PeerAddress(other, memory_address(other)) for other in self.names if other != name
            ),
            window=WINDOW,
            gossip=GossipConfig(interval_ms=50, fanout=2),
            membership=MembershipConfig.local(),
            snapshot_interval_ms=self.snapshot_interval_ms,
            tick_interval_ms=STEP_MS,
            policy=POLICY,
            quorum_timeout_ms=500,
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

    def step(self) -> None:
        self.clock.advance(STEP_MS)
        self.network.advance(STEP_MS)
        for node in self.nodes.values():
            node.pump()

    def write(self) -> str:
        name = self.rng.choice(list(self.nodes))
        quorum = self.rng.random() < 0.2
        key = self.rng.choice(QUORUM_KEYS if quorum else EVENTUAL_KEYS)
        amount = self.rng.randint(1, 9)
        ticket = self.nodes[name].engine.write(key, "add", amount)
        start = self.clock.now_ms() // WINDOW.size_ms * WINDOW.size_ms
        self.ledger.record(ticket, (key, start), amount, quorum)
        return name

    def crash(self, name: str, why: str) -> None:
        """Drop the node without closing it: its unsynced log buffer is gone with it."""
        self.events.append(f"{self.clock.monotonic_ms()} crash {name} {why}")
        node = self.nodes.pop(name)
        node.transport.close()
        replica = node.identity.replica
        node.engine.close()  # quorum writes in flight: their fate is unknown to the client
        self.run(self.rng.choice([0, 0, 30, 200, 800]))
        restarted = self.start(name)
        self.resumed_after_crash += restarted.identity.replica == replica

    def stop_cleanly(self, name: str) -> None:
        self.events.append(f"{self.clock.monotonic_ms()} stop {name}")
        self.nodes.pop(name).close()
        self.run(self.rng.choice([0, 200]))
        self.start(name)

    def run(self, duration_ms: int) -> None:
        for _ in range(duration_ms // STEP_MS):
            self.step()

    def traffic(self, duration_ms: int) -> None:
        for _ in range(duration_ms // STEP_MS):
            writers = [self.write() for _ in range(self.rng.choice([0, 1, 1, 3]))]
            acknowledged_before = self.ledger.acknowledged_writes
            self.step()
            roll = self.rng.random()
            if writers and self.ledger.acknowledged_writes > acknowledged_before and roll < 0.03:
                # Right after the pump that acknowledged a write, before the next gossip round.
                self.crashes_after_ack += 1
                self.crash(writers[-1], "after-ack")
            elif roll < 0.04:
                self.crash(self.rng.choice(self.names), "anywhere")
            elif roll < 0.045:
                self.stop_cleanly(self.rng.choice(self.names))

    def observed(self, node: Node) -> dict[Cell, float]:
        cells = {}
        for key in (*EVENTUAL_KEYS, *QUORUM_KEYS):
            for window in windows(node, key):
                cells[(key, window.start_ms)] = float(str(window.value))
        return cells


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed_{s}" for s in SEEDS])
def test_no_acknowledged_write_is_lost_or_counted_twice_across_crashes(seed: int) -> None:
    run = Run(seed)
    run.network.set_faults(LOSSY)
    run.traffic(3_000)
    run.network.set_faults(FaultOptions())
    run.run(WINDOW.size_ms + 3_000)  # quiet until every window closed and gossip converged
    context = f"seed={seed} snapshot_ms={run.snapshot_interval_ms} events={run.events}"
    crashes = sum(" crash " in event for event in run.events)
    assert crashes > 0, f"{context}: the run crashed no node"
    # With the log every crash resumes the replica slot: the rule under test.
    assert run.resumed_after_crash == crashes, context
    expected = run.ledger.confirmed
    for name, node in run.nodes.items():
        cells = run.observed(node)
        eventual = {cell: value for cell, value in cells.items() if cell[0] in EVENTUAL_KEYS}
        assert eventual == {c: v for c, v in expected.items() if c[0] in EVENTUAL_KEYS}, (
            f"{context} node={name}"
        )
        for cell, value in cells.items():
            if cell[0] in QUORUM_KEYS:
                low = expected.get(cell, 0)
                assert low <= value <= low + run.ledger.uncertain.get(cell, 0), (
                    f"{context} node={name} cell={cell}"
                )
        for cell in expected:
            assert cell in cells, f"{context} node={name} missing {cell}"


def test_the_runs_crash_right_after_acknowledgements() -> None:
    """The scenario does what it claims: some crashes come right after an acknowledgement."""
    total = 0
    for seed in range(5):
        run = Run(seed)
        run.network.set_faults(LOSSY)
        run.traffic(3_000)
        total += run.crashes_after_ack
    assert total > 0
