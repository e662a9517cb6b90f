"""A seeded cluster simulation: gossip cores over the simulated network with a manual clock.

One seed drives everything (the network's faults, the ingest, the crash and partition plan, every
node's randomness), so a failing run is reproduced by its seed. The checker is separate from the
simulator: :meth:`Cluster.expected_cells` is the oracle built from acknowledged writes only.

Durability model: a node that crashes "with its data directory" comes back with its lattice as
it was (the driver snapshots on every acknowledged write); a node whose disk is lost, or that
never comes back, is *retired*: its replica's writes count as far as they reached another
store before the crash (a replica's slot is a running total, so any copy is a prefix of its
writes) — nothing more (no double counting) and nothing less (no loss of what was gossiped).
A paused node (SIGSTOP) keeps its core, lattice and endpoint but neither reads, ticks nor
takes writes until it resumes; packets sent to it wait.

Finality is watched all along (:meth:`Cluster.watch_finality`, called after every step): the
first value any node reports final for a window is remembered, and from then on every node that
reports the window final must report exactly that value, and a node that reported it final
must keep that value for as long as it runs — a violation is recorded in
:attr:`Cluster.finality_violations` with the time and node.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from crdtstream.config import GossipConfig, MembershipConfig, WindowConfig
from crdtstream.gossip.core import GossipCore
from crdtstream.gossip.reference import SlotCounters, SlotDelta, decode_slot_delta
from crdtstream.ids import new_replica_id
from transports.memory import FaultOptions, MemoryNetwork, MemoryTransport, memory_address

GOSSIP = GossipConfig(interval_ms=100, fanout=2, delta_buffer_groups=64, chunk_bytes_max=4096)
MEMBERSHIP = MembershipConfig(probe_interval_ms=200, probe_timeout_ms=100)
WINDOW = WindowConfig(size_ms=1_000, allowed_lateness_ms=500, retention_windows=60)

CellKey = tuple[str, int, str]


@dataclass
class SimNode:
    """One simulated node: its durable lattice and, while running, its core and endpoint."""

    node_id: str
    lattice: SlotCounters
    core: GossipCore[SlotDelta] | None = None
    transport: MemoryTransport | None = None

    @property
    def running(self) -> bool:
        """Whether the node is up."""
        return self.core is not None


@dataclass
class Cluster:
    """N simulated nodes, the network between them and the oracle of acknowledged writes."""

    seed: int
    node_count: int
    faults: FaultOptions
    rng: random.Random = field(init=False)
    network: MemoryNetwork = field(init=False)
    nodes: dict[str, SimNode] = field(init=False)
    acknowledged: dict[CellKey, int] = field(init=False)
    retired: dict[CellKey, int] = field(init=False)
    retired_replicas: set[str] = field(init=False)
    paused: set[str] = field(init=False)
    final_values: dict[int, dict[str, float]] = field(init=False)
    final_on: dict[str, set[int]] = field(init=False)
    finality_violations: list[str] = field(init=False)
    finals_seen: int = field(init=False)
    pause_verdicts: int = field(init=False)
    events: dict[str, int] = field(init=False)
    """What the run did to the cluster: crashes, restarts, partitions, heals."""
    gone_stats: dict[str, int] = field(init=False)
    """The counters of cores that crashed, summed (see :meth:`stat_total`)."""

    def __post_init__(self) -> None:
        self.events = dict.fromkeys(
            ("crashes", "restarts", "disks_lost", "removals", "pauses", "partitions", "heals"), 0
        )
        self.gone_stats = {}
        self.rng = random.Random(self.seed)
        self.network = MemoryNetwork(self.rng.getrandbits(32), self.faults)
        self.nodes = {}
        self.acknowledged = {}
        self.retired = {}
        self.retired_replicas = set()
        self.paused = set()
        self.final_values = {}
        self.final_on = {}
        self.finality_violations = []
        self.finals_seen = 0
        self.pause_verdicts = -1
        for index in range(self.node_count):
            node_id = f"n{index}"
            replica = new_replica_id(node_id, self.rng)
            self.nodes[node_id] = SimNode(node_id, self.new_lattice(replica))
        for node_id in self.nodes:
            self.start(node_id)

    decode_delta = staticmethod(decode_slot_delta)

    def new_lattice(self, replica: str) -> SlotCounters:
        """The lattice of a new replica."""
        return SlotCounters(replica, WINDOW.size_ms, WINDOW.allowed_lateness_ms)

    @property
    def now_ms(self) -> int:
        """The simulated time."""
        return self.network.now_ms

    def running_nodes(self) -> list[SimNode]:
        """The nodes that are up (and not paused)."""
        return [
            node for node in self.nodes.values() if node.running and node.node_id not in self.paused
        ]

    def pause(self, node_id: str) -> None:
        """SIGSTOP: the node keeps everything but does nothing until :meth:`resume`."""
        self.paused.add(node_id)

    def resume(self, node_id: str) -> None:
        """SIGCONT."""
        self.paused.discard(node_id)

    def note_pause_verdicts(self, node_id: str) -> None:
        """Before a paused node resumes: count the running nodes that declared it dead."""
        self.pause_verdicts = sum(
            1
            for node in self.running_nodes()
            if node.core is not None
            and node.core.membership.members.get(node_id) is not None
            and node.core.membership.members[node_id].status == "dead"
        )

    def remove(self, node_id: str) -> None:
        """An operator removes ``node_id`` (gone for good) through one running node."""
        for node in self.running_nodes():
            assert node.core is not None
            if node.core.remove_member(node_id, self.now_ms):
                return

    def totals_of(self, node: SimNode) -> dict[tuple[str, int], float]:
        """Every (key, window start)'s value on ``node``."""
        return {cell: float(value) for cell, value in node.lattice.totals().items()}

    def watch_finality(self) -> None:
        """Poll every running node's ``is_final`` for every window holding a write; record any
        value reported final that differs from the first one, or that a node changes later."""
        starts = sorted({cell[1] for cell in self.acknowledged})
        for node in self.running_nodes():
            assert node.core is not None
            totals = self.totals_of(node)
            watched = self.final_on.setdefault(node.node_id, set())
            for start in starts:
                value = {key: v for (key, s), v in totals.items() if s == start and v}
                final = node.core.is_final(start, start + WINDOW.size_ms)
                if final:
                    self.finals_seen += 1
                    first = self.final_values.setdefault(start, value)
                    watched.add(start)
                else:
                    first = self.final_values.get(start, {})
                    if start not in watched:
                        continue
                if value != first:
                    changed = {
                        key: (first.get(key, 0), value.get(key, 0))
                        for key in set(first) | set(value)
                        if first.get(key, 0) != value.get(key, 0)
                    }
                    self.finality_violations.append(
                        f"t={self.now_ms} {node.node_id} window {start} "
                        f"({'final' if final else 'was final'}): (final, now) {changed}"
                    )

    def start(self, node_id: str) -> None:
        """Start (or restart) a node on its current lattice, with fresh volatile state."""
        node = self.nodes[node_id]
        self.final_on.pop(node_id, None)  # a new process: it promised nothing yet
        transport = self.network.endpoint(node_id)
        for other in self.nodes:
            if other != node_id:
                transport.add_peer(other, memory_address(other))
        seeds = [other for other in self.nodes if other != node_id]
        node.core = GossipCore(
            node_id,
            memory_address(node_id),
            node.lattice.replica,
            node.lattice,
            self.decode_delta,
            rng=random.Random(self.rng.getrandbits(64)),
            gossip=GOSSIP,
            membership=MEMBERSHIP,
            window=WINDOW,
            seeds=seeds,
        )
        node.transport = transport

    def crash(self, node_id: str, *, keep_disk: bool) -> None:
        """Stop a node at once; without its disk it comes back as a new replica."""
        node = self.nodes[node_id]
        assert node.transport is not None
        assert node.core is not None
        self.events["crashes"] += 1
        self.events["disks_lost"] += not keep_disk
        for name, value in _core_stats(node.core).items():
            self.gone_stats[name] = self.gone_stats.get(name, 0) + value
        node.transport.close()
        node.core, node.transport = None, None
        if not keep_disk:
            self.retire(node.lattice.replica)
            node.lattice = self.new_lattice(new_replica_id(node_id, self.rng))

    def stat_total(self, name: str) -> int:
        """A counter of the gossip core, its membership or anti-entropy (e.g.
        ``malformed_received``, ``declared_dead``, ``peer_restarts_seen``), summed over every
        core of the run, crashed ones included."""
        running = sum(_core_stats(node.core)[name] for node in self.running_nodes() if node.core)
        return running + self.gone_stats.get(name, 0)

    def retire(self, replica: str) -> None:
        """From now on ``replica`` writes nothing: expect what other stores hold of it."""
        own = next(n for n in self.nodes.values() if n.lattice.replica == replica)
        self.retired_replicas.add(replica)
        for node in self.nodes.values():
            if node is own:
                continue
            for cell, value in node.lattice.full_state().cells.items():
                if cell[2] == replica and value > self.retired.get(cell, 0):
                    self.retired[cell] = value

    def ingest(self, node_id: str, key: str, amount: int) -> None:
        """A write on ``node_id`` at the current time; recorded once acknowledged."""
        node = self.nodes[node_id]
        if node.lattice.add(key, self.now_ms, amount):
            cell = (key, node.lattice.window_start(self.now_ms), node.lattice.replica)
            self.acknowledged[cell] = self.acknowledged.get(cell, 0) + amount

    def step(self, step_ms: int) -> None:
        """Advance the network by ``step_ms``, then let every running node read and tick."""
        self.network.advance(step_ms)
        now_ms = self.now_ms
        for node in self.running_nodes():
            assert node.core is not None
            assert node.transport is not None
            node.lattice.advance(now_ms)
            for packet in node.transport.receive(10_000):
                self._send(node, node.core.step(packet.source_id, packet.payload, now_ms))
            self._send(node, node.core.tick(now_ms))

    def _send(self, node: SimNode, outgoing: list) -> None:  # type: ignore[type-arg]
        assert node.transport is not None
        for item in outgoing:
            node.transport.send(item.peer_id, item.payload)

    def expected_cells(self) -> dict[CellKey, int]:
        """The oracle: every acknowledged write of live replicas; of a retired replica, what
        the stores hold of it (at least what they held when it retired, at most what it wrote).
        """
        retired_replicas = self.retired_replicas
        expected = {
            cell: value
            for cell, value in self.acknowledged.items()
            if cell[2] not in retired_replicas
        }
        for node in self.nodes.values():
            for cell, value in node.lattice.full_state().cells.items():
                if cell[2] in retired_replicas and value > expected.get(cell, 0):
                    expected[cell] = value
        for cell, value in self.retired.items():
            assert expected.get(cell, 0) >= value, f"seed={self.seed}: {cell} lost"
        for cell, value in expected.items():
            assert value <= self.acknowledged.get(cell, 0), f"seed={self.seed}: {cell} double"
        return expected

    def converged(self) -> bool:
        """Every running node holds exactly the expected cells."""
        expected = self.expected_cells()
        return all(node.lattice.full_state().cells == expected for node in self.running_nodes())

    def all_final(self) -> bool:
        """Every window with a write is final on every running node."""
        starts = {cell[1] for cell in self.acknowledged}
        for node in self.running_nodes():
            assert node.core is not None
            for start in starts:
                if not node.core.is_final(start, start + WINDOW.size_ms):
                    return False
        return True


def _core_stats(core: GossipCore[SlotDelta]) -> dict[str, int]:
    return asdict(core.anti_entropy.stats) | asdict(core.membership.stats) | asdict(core.stats)
