"""A seeded simulation of a Raft cluster under a nemesis, recording a client history.

Every node is the real stack: :class:`RawNode`, :class:`CrashableStorage` (or the on-disk
:class:`WalStorage`), :class:`StateMachine`, over the seeded :class:`MemoryNetwork` with every
message through the real codec. This module is the driver and does exactly what a real one must,
in order: persist a Ready (one fsync), only then send its messages, then apply, then advance. A
crash may strike between persisting and the fsync, losing what was not synced, as a power cut
would. Clients are in :mod:`sim_clients`, faults in :mod:`sim_nemesis`; the network also loses,
duplicates, reorders and delays packets, and each node's ticks run at its own skewed rate.

Checked during the run: persist-before-send, at most one leader per term, every node applying the
same entry at each index. At the end everything heals, every node restarts and becomes a voter
again, the cluster must converge, and final reads join the history that the caller checks for
linearizability. Everything derives from one seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from sim_clients import TIMESTAMP_MS, Client, Workload
from sim_nemesis import Nemesis

from crdtstream.config import RaftConfig, WindowConfig
from crdtstream.raft.rawnode import RawNode
from crdtstream.raft.state_machine import StateMachine
from crdtstream.raft.types import (
    Entry,
    EntryKind,
    Message,
    MessageType,
    Ready,
    Role,
    decode_conf_change,
    decode_message,
)
from crdtstream.raft.types import encode_message as encode_raft_message
from crdtstream.storage.wal import WalStorage, persist_ready
from tests.checkers.linearizability import Operation
from tests.crashable import CrashableStorage
from transports.memory import FaultOptions, MemoryNetwork, MemoryTransport, memory_address

TICK_MS = 10
RAFT = RaftConfig(tick_ms=TICK_MS, election_timeout_ticks=10, heartbeat_ticks=1)
WINDOW = WindowConfig(size_ms=1_000_000, allowed_lateness_ms=0, retention_windows=1)


@dataclass(frozen=True, slots=True)
class Options:
    """The shape of one run; every random choice within it comes from ``seed``."""

    seed: int
    nodes: int = 3
    clients: int = 5
    keys: tuple[str, ...] = ("x", "y")
    operations_per_client: int = 6
    limit: int = 12
    snapshot_every_entries: int = 12
    faulty_ms: int = 2_500
    attempt_timeout_ms: int = 250
    attempts_max: int = 3
    converge_ms_max: int = 6_000
    membership_changes: bool = True
    """Let the nemesis remove voters and add them back (one change at a time)."""
    wal_directory: Path | None = None
    """When set, nodes keep their log in a :class:`WalStorage` there instead of in memory."""


@dataclass
class Report:
    """What a run produced: the history, final values per key and invariant violations."""

    seed: int
    history: list[Operation]
    final_values: dict[str, dict[str, object]]
    violations: list[str]
    nemesis_log: list[str]
    acknowledged_writes: int = 0
    terms: int = 0
    snapshots_installed: int = 0
    conf_changes_applied: int = 0
    crashes: int = 0
    restarts: int = 0
    partitions: int = 0
    """Network faults the nemesis set (isolations, partitions, bridges, rings)."""


@dataclass
class SimNode:
    """One node: its storage survives crashes; the rest is rebuilt by :meth:`Simulation.start`."""

    node_id: str
    storage: CrashableStorage | WalStorage
    tick_interval_ms: int
    raw: RawNode | None = None
    machine: StateMachine | None = None
    endpoint: MemoryTransport | None = None
    next_tick_ms: int = 0
    crash_in_next_ready: bool = False
    crash_after_vote: bool = False
    dirty: bool = False
    restart_at_ms: int | None = None
    writes: dict[tuple[str, int], Client] = field(default_factory=dict)
    reads: dict[bytes, Client] = field(default_factory=dict)
    confirmed_reads: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        """Whether the node is running (not crashed)."""
        return self.raw is not None


class Simulation:
    """One seeded run; call :meth:`run` once."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.ids = [f"n{index}" for index in range(1, options.nodes + 1)]
        self.background = self._background_faults()
        self.network = MemoryNetwork(options.seed, self.background)
        self.now_ms = 0
        self.violations: list[str] = []
        self.nemesis_log: list[str] = []
        self.leader_by_term: dict[int, str] = {}
        self.nodes = {
            node_id: SimNode(node_id, self._open_storage(node_id), self._tick_interval())
            for node_id in self.ids
        }
        self.applied_by_index: dict[int, tuple[int, bytes]] = {}
        for node in self.nodes.values():
            self.start(node)
        self.workload = Workload(self, self.rng)
        self.final_phase = False
        self.nemesis = Nemesis(self)
        self.snapshots_installed = 0
        self.conf_changes_applied = 0
        self.crashes = 0
        self.restarts = 0
        self.partitions = 0

    # -- setup --

    def _background_faults(self) -> FaultOptions:
        rng = self.rng
        return FaultOptions(
            drop_probability=rng.choice([0.0, 0.02, 0.1]),
            duplicate_probability=rng.choice([0.0, 0.05]),
            reorder_probability=rng.choice([0.0, 0.1]),
            reorder_delay_ms_max=20,
            delay_ms_min=1,
            delay_ms_max=rng.choice([2, 5, 15]),
        )

    def _tick_interval(self) -> int:
        """A node's clock runs up to 30 % fast or slow (tick skew)."""
        return self.rng.randint(TICK_MS * 7 // 10, TICK_MS * 13 // 10)

    def _open_storage(self, node_id: str) -> CrashableStorage | WalStorage:
        directory = self.options.wal_directory
        if directory is None:
            return CrashableStorage(self.ids)
        # The simulated crash kills the process, not the machine: what was written survives
        # without an fsync, so the simulation skips the cost of real ones.
        return WalStorage.open(
            directory / node_id, self.ids, segment_bytes=1024, sync_file=_no_fsync
        )

    def close(self) -> None:
        """Release the files of on-disk logs."""
        for node in self.nodes.values():
            if isinstance(node.storage, WalStorage):
                node.storage.crash()

    def start(self, node: SimNode) -> None:
        """Start (or restart) a node from what its storage holds durably."""
        machine = StateMachine(WINDOW)
        snapshot = node.storage.snapshot()
        if not snapshot.is_empty():
            machine.restore(snapshot.data)
        rng = random.Random(self.rng.random())
        node.raw = RawNode(node.node_id, node.storage, RAFT, rng, snapshot.meta.index)
        node.machine = machine
        node.endpoint = self.network.endpoint(node.node_id)
        for peer in self.ids:
            if peer != node.node_id:
                node.endpoint.add_peer(peer, memory_address(peer))
        node.next_tick_ms = self.now_ms + node.tick_interval_ms
        node.restart_at_ms = None

    def crash(self, node: SimNode, restart_after_ms: int | None) -> None:
        assert node.endpoint is not None
        self.crashes += 1
        node.endpoint.close()
        node.storage.crash()
        if isinstance(node.storage, WalStorage):
            node.storage = self._open_storage(node.node_id)  # replay the files left behind
        node.raw = node.machine = node.endpoint = None
        node.writes.clear()
        node.reads.clear()
        node.confirmed_reads.clear()
        node.crash_in_next_ready = node.crash_after_vote = False
        if restart_after_ms is not None:
            node.restart_at_ms = self.now_ms + restart_after_ms

    # -- the driver --

    def _step_node(self, node: SimNode) -> None:
        """Hand a node what arrived and the ticks that are due; mark it dirty if anything did."""
        assert node.raw is not None
        assert node.endpoint is not None
        for packet in node.endpoint.receive(10_000):
            node.raw.step(decode_message(packet.payload))
            node.dirty = True
        while self.now_ms >= node.next_tick_ms:
            node.raw.tick()
            node.next_tick_ms += node.tick_interval_ms
            node.dirty = True

    def _drain_ready(self, node: SimNode) -> bool:
        worked = False
        while node.raw is not None and node.raw.has_ready():
            self._process_ready(node, node.raw.ready())
            worked = True
        return worked

    def _process_ready(self, node: SimNode, ready: Ready) -> None:
        raw, machine, endpoint = node.raw, node.machine, node.endpoint
        assert raw is not None
        assert machine is not None
        assert endpoint is not None
        if node.crash_in_next_ready and ready.must_sync:
            self._persist_without_sync(node, ready)
            self.nemesis_log.append(f"{self.now_ms}: {node.node_id} crashed before fsync")
            self.crash(node, self.nemesis.downtime_ms())
            return
        persist_ready(node.storage, ready)
        if node.storage.unsynced_writes:
            self.violations.append(f"{node.node_id}: messages would leave before fsync")
        self._observe_leader(node, ready)
        for message in ready.messages:
            assert message.to is not None
            endpoint.send(message.to, encode_raft_message(message))
        if ready.snapshot is not None and not ready.snapshot.is_empty():
            machine.restore(ready.snapshot.data)
            self.snapshots_installed += 1
        for entry in ready.committed_entries:
            if entry.kind is EntryKind.CONF_CHANGE:
                raw.apply_conf_change(decode_conf_change(entry.data))
                self.conf_changes_applied += 1
            self._check_same_entry(node, entry)
            result = machine.apply_entry(entry)
            if result is not None:
                self.workload.answer_write(node, entry.data, result)
        for read_state in ready.read_states:
            node.confirmed_reads.append((read_state.index, read_state.request_ctx))
        raw.advance(ready)
        self.workload.serve_reads(node)
        self._maybe_snapshot(node)
        if node.crash_after_vote and any(_grants_vote(message) for message in ready.messages):
            self.nemesis_log.append(f"{self.now_ms}: {node.node_id} crashed after voting")
            self.crash(node, self.rng.randint(1, 20))

    def _check_same_entry(self, node: SimNode, entry: Entry) -> None:
        """State machine safety: every node applies the same entry at a given index."""
        seen = self.applied_by_index.setdefault(entry.index, (entry.term, entry.data))
        if seen != (entry.term, entry.data):
            self.violations.append(f"{node.node_id} applied a different entry at {entry.index}")

    def _persist_without_sync(self, node: SimNode, ready: Ready) -> None:
        if ready.snapshot is not None and not ready.snapshot.is_empty():
            node.storage.apply_snapshot(ready.snapshot)
        node.storage.append(ready.entries)
        if ready.hard_state is not None:
            node.storage.set_hard_state(ready.hard_state)

    def _observe_leader(self, node: SimNode, ready: Ready) -> None:
        """Election safety: at most one leader per term, over the whole run."""
        assert node.raw is not None
        if ready.soft_state is None or ready.soft_state.role is not Role.LEADER:
            return
        term = node.raw.hard_state().term
        previous = self.leader_by_term.setdefault(term, node.node_id)
        if previous != node.node_id:
            self.violations.append(f"two leaders in term {term}: {previous}, {node.node_id}")

    def _maybe_snapshot(self, node: SimNode) -> None:
        """Snapshot and compact now and then, so lagging nodes need InstallSnapshot."""
        assert node.raw is not None
        assert node.machine is not None
        every = self.options.snapshot_every_entries
        applied = node.machine.applied_index
        if every <= 0 or applied - node.storage.snapshot().meta.index < every:
            return
        voters = node.raw.status().voters
        node.storage.create_snapshot(applied, voters, node.machine.snapshot())
        node.storage.compact(applied)
        node.storage.sync()

    # -- inspection --

    def leader(self) -> str | None:
        """The leader of the highest term among live nodes, if any."""
        leaders = [
            (node.raw.hard_state().term, node.node_id)
            for node in self.nodes.values()
            if node.raw is not None and node.raw.soft_state().role is Role.LEADER
        ]
        return max(leaders)[1] if leaders else None

    # -- the run --

    def advance_to_next_event(self, limit_ms: int) -> None:
        candidates = [limit_ms, self.now_ms + 20]
        due = self.network.next_due_ms()
        if due is not None:
            candidates.append(due)
        for node in self.nodes.values():
            if node.alive:
                candidates.append(node.next_tick_ms)
            elif node.restart_at_ms is not None:
                candidates.append(node.restart_at_ms)
        target = max(self.now_ms + 1, min(candidates))
        self.network.advance(target - self.now_ms)
        self.now_ms = target

    def round(self) -> None:
        self.nemesis.act()
        for node in self.nodes.values():
            if node.alive:
                self._step_node(node)
        self.workload.act()
        for node in self.nodes.values():
            if node.dirty:
                node.dirty = False
                self._drain_ready(node)

    def _heal(self) -> None:
        self.final_phase = True
        self.network.set_faults(FaultOptions(delay_ms_min=1, delay_ms_max=3))
        self.nemesis_log.append(f"{self.now_ms}: heal all, restart all")
        for node in self.nodes.values():
            node.crash_in_next_ready = node.crash_after_vote = False
            if not node.alive:
                self.start(node)
                self.restarts += 1

    def _converged(self) -> bool:
        if self.workload.busy():
            return False
        applied = set()
        for node in self.nodes.values():
            assert node.raw is not None
            assert node.machine is not None
            status = node.raw.status()
            applied.add((status.commit, node.machine.applied_index))
        return len(applied) == 1 and self.leader() is not None

    def run(self) -> Report:
        """Faults, then heal and converge, then final reads; returns the report."""
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> Report:
        while self.now_ms < self.options.faulty_ms:
            self.advance_to_next_event(self.options.faulty_ms)
            self.round()
        self._heal()
        deadline_ms = self.now_ms + self.options.converge_ms_max
        while not self._converged():
            if self.now_ms >= deadline_ms:
                self.violations.append(f"no convergence within {self.options.converge_ms_max} ms")
                break
            self.advance_to_next_event(deadline_ms)
            self.round()
        if not self.violations:
            self.workload.final_reads()
        return Report(
            seed=self.options.seed,
            history=self.workload.recorder.history(),
            final_values=self._final_values(),
            violations=self.violations,
            nemesis_log=self.nemesis_log,
            acknowledged_writes=len(self.workload.acknowledged),
            terms=len(self.leader_by_term),
            snapshots_installed=self.snapshots_installed,
            conf_changes_applied=self.conf_changes_applied,
            crashes=self.crashes,
            restarts=self.restarts,
            partitions=self.partitions,
        )

    def _final_values(self) -> dict[str, dict[str, object]]:
        values: dict[str, dict[str, object]] = {}
        for node_id, node in self.nodes.items():
            if node.machine is None:
                continue
            values[node_id] = {
                key: node.machine.value(key, TIMESTAMP_MS) for key in self.options.keys
            }
        return values


def _grants_vote(message: Message) -> bool:
    return message.type in (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP) and not message.reject


def _no_fsync(descriptor: int) -> None:
    """Stands in for :func:`os.fsync` where only process crashes are simulated."""
    del descriptor
