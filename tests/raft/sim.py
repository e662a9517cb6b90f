"""A seeded simulation of a Raft cluster under a nemesis, recording a client history.

Every node is the real stack: :class:`RawNode`, :class:`CrashableStorage`, :class:`StateMachine`,
over the seeded :class:`MemoryNetwork` with every message through the real codec. The harness is
the driver and does exactly what a real one must, in order: persist a Ready (fsync once), only
then send its messages, then apply, then advance. A crash may strike between persisting and the
fsync, losing what was not synced, as a power cut would.

Clients are Jepsen-style processes: one operation at a time, recorded as invoke and complete on
the simulation's single clock. A write that is not answered in time is retried with the same
(client id, sequence) on another node, so the state machine's sessions keep it at most once; one
that is never answered stays open (unknown result). Reads go through ReadIndex; a read that is
not answered is dropped from the history (it had no effect).

The nemesis partitions (isolate the leader, a random minority, a bridge, a majority ring),
crashes and restarts nodes, and the network loses, duplicates, reorders and delays packets; each
node's ticks run at its own skewed rate. At the end everything heals, every node restarts, the
cluster must converge, and final reads join the history. Everything derives from one seed.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crdtstream.config import RaftConfig, WindowConfig
from crdtstream.errors import NotLeaderError
from crdtstream.raft.crashable import CrashableStorage
from crdtstream.raft.rawnode import RawNode
from crdtstream.raft.state_machine import (
    Command,
    Result,
    StateMachine,
    decode_command,
    encode_command,
)
from crdtstream.raft.types import (
    ConfChange,
    ConfChangeKind,
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
from crdtstream.raft.wal import WalStorage, persist_ready
from tests.checkers.linearizability import HistoryRecorder, Operation
from transports.memory import FaultOptions, MemoryNetwork, MemoryTransport, memory_address

TICK_MS = 10
RAFT = RaftConfig(tick_ms=TICK_MS, election_timeout_ticks=10, heartbeat_ticks=1)
WINDOW = WindowConfig(size_ms=1_000_000, allowed_lateness_ms=0, retention_windows=1)
TIMESTAMP_MS = 0
"""Every command lands in one window, so a key behaves as a single counter."""


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


@dataclass
class _Waiter:
    """A client operation waiting at one node."""

    client: _Client
    key: str


@dataclass
class _Client:
    """One Jepsen-style process: a single operation in flight at a time."""

    number: int
    rng: random.Random
    remaining: int
    next_action_ms: int = 0
    sequence: int = 0
    handle: int | None = None
    operation: Operation | None = None
    command: bytes = b""
    attempts: int = 0
    deadline_ms: int = 0
    read_context: bytes = b""

    @property
    def client_id(self) -> str:
        return f"client-{self.number}"


@dataclass
class _Node:
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
    writes: dict[tuple[str, int], _Client] = field(default_factory=dict)
    reads: dict[bytes, _Client] = field(default_factory=dict)
    confirmed_reads: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def alive(self) -> bool:
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
        self.recorder = HistoryRecorder()
        self.violations: list[str] = []
        self.nemesis_log: list[str] = []
        self.leader_by_term: dict[int, str] = {}
        self.next_nemesis_ms = 300
        self.nodes = {
            node_id: _Node(node_id, self._open_storage(node_id), self._tick_interval())
            for node_id in self.ids
        }
        self.applied_by_index: dict[int, tuple[int, bytes]] = {}
        for node in self.nodes.values():
            self._start(node)
        self.clients = [
            _Client(index, random.Random(self.rng.random()), options.operations_per_client)
            for index in range(options.clients)
        ]
        self.final_phase = False
        self.snapshots_installed = 0
        self.conf_changes_applied = 0
        self.acknowledged: list[Operation] = []

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

    def _start(self, node: _Node) -> None:
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

    def _crash(self, node: _Node, restart_after_ms: int | None) -> None:
        assert node.endpoint is not None
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

    def _step_node(self, node: _Node) -> None:
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

    def _drain_ready(self, node: _Node) -> bool:
        worked = False
        while node.raw is not None and node.raw.has_ready():
            self._process_ready(node, node.raw.ready())
            worked = True
        return worked

    def _process_ready(self, node: _Node, ready: Ready) -> None:
        raw, machine, endpoint = node.raw, node.machine, node.endpoint
        assert raw is not None
        assert machine is not None
        assert endpoint is not None
        if node.crash_in_next_ready and ready.must_sync:
            self._persist_without_sync(node, ready)
            self.nemesis_log.append(f"{self.now_ms}: {node.node_id} crashed before fsync")
            self._crash(node, self._downtime_ms())
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
                self._answer_write(node, entry.data, result)
        for read_state in ready.read_states:
            node.confirmed_reads.append((read_state.index, read_state.request_ctx))
        raw.advance(ready)
        self._serve_reads(node)
        self._maybe_snapshot(node)
        if node.crash_after_vote and any(_grants_vote(message) for message in ready.messages):
            self.nemesis_log.append(f"{self.now_ms}: {node.node_id} crashed after voting")
            self._crash(node, self.rng.randint(1, 20))

    def _check_same_entry(self, node: _Node, entry: Entry) -> None:
        """State machine safety: every node applies the same entry at a given index."""
        seen = self.applied_by_index.setdefault(entry.index, (entry.term, entry.data))
        if seen != (entry.term, entry.data):
            self.violations.append(f"{node.node_id} applied a different entry at {entry.index}")

    def _persist_without_sync(self, node: _Node, ready: Ready) -> None:
        if ready.snapshot is not None and not ready.snapshot.is_empty():
            node.storage.apply_snapshot(ready.snapshot)
        node.storage.append(ready.entries)
        if ready.hard_state is not None:
            node.storage.set_hard_state(ready.hard_state)

    def _observe_leader(self, node: _Node, ready: Ready) -> None:
        """Election safety: at most one leader per term, over the whole run."""
        assert node.raw is not None
        if ready.soft_state is None or ready.soft_state.role is not Role.LEADER:
            return
        term = node.raw.hard_state().term
        previous = self.leader_by_term.setdefault(term, node.node_id)
        if previous != node.node_id:
            self.violations.append(f"two leaders in term {term}: {previous}, {node.node_id}")

    def _maybe_snapshot(self, node: _Node) -> None:
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

    # -- clients --

    def _answer_write(self, node: _Node, data: bytes, result: Result) -> None:
        command = decode_command(data)
        client = node.writes.pop((command.client_id, command.sequence), None)
        if client is None or client.handle is None or client.sequence != command.sequence:
            return
        assert client.operation is not None
        if not result.ok:
            self.violations.append(f"write refused: {command} -> {result}")
            return
        value = result.applied if client.operation.kind == "conditional_add" else None
        self._complete(client, value)

    def _serve_reads(self, node: _Node) -> None:
        assert node.machine is not None
        still_waiting = []
        for index, context in node.confirmed_reads:
            if index > node.machine.applied_index:
                still_waiting.append((index, context))
                continue
            client = node.reads.pop(context, None)
            if client is not None and client.read_context == context:
                assert client.operation is not None
                value = node.machine.value(client.operation.key, TIMESTAMP_MS)
                self._complete(client, 0 if value is None else value)
        node.confirmed_reads = still_waiting

    def _complete(self, client: _Client, result: int | bool | None) -> None:
        assert client.handle is not None
        assert client.operation is not None
        self.recorder.complete(client.handle, self.now_ms, result)
        if client.operation.kind != "read":
            self.acknowledged.append(client.operation)
        client.handle = client.operation = None
        client.read_context = b""
        client.next_action_ms = self.now_ms + client.rng.randint(0, 60)

    def _act(self, client: _Client) -> None:
        if client.handle is not None:
            if self.now_ms >= client.deadline_ms:
                self._retry_or_give_up(client)
            return
        if client.remaining <= 0 or self.now_ms < client.next_action_ms:
            return
        client.remaining -= 1
        self._invoke(client, self._choose_operation(client))

    def _choose_operation(self, client: _Client) -> Operation:
        rng = client.rng
        key = rng.choice(self.options.keys)
        kind = rng.choice(["add", "add", "conditional_add", "read", "read"])
        if kind == "read":
            return Operation(client.number, key, "read", self.now_ms, None)
        limit = self.options.limit if kind == "conditional_add" else None
        return Operation(client.number, key, kind, self.now_ms, None, rng.randint(1, 3), limit)

    def _invoke(self, client: _Client, operation: Operation) -> None:
        client.operation = operation
        client.handle = self.recorder.invoke(operation)
        client.attempts = 0
        if operation.kind != "read":
            client.sequence += 1
            command = Command(
                client.client_id,
                client.sequence,
                operation.key,
                "counter",
                operation.kind,
                operation.amount,
                TIMESTAMP_MS,
                operation.limit,
            )
            client.command = encode_command(command)
        self._attempt(client)

    def _attempt(self, client: _Client) -> None:
        assert client.operation is not None
        client.attempts += 1
        client.deadline_ms = self.now_ms + self.options.attempt_timeout_ms
        node = self.nodes[client.rng.choice(self.ids)]
        if node.raw is None:
            return  # connection refused: the deadline will bring a retry
        if client.operation.kind == "read":
            client.read_context = f"{client.client_id}:{client.handle}:{client.attempts}".encode()
            node.reads[client.read_context] = client
            node.dirty = True
            node.raw.read_index(client.read_context)
            return
        node.writes[(client.client_id, client.sequence)] = client
        node.dirty = True
        with contextlib.suppress(NotLeaderError):  # not taken: the deadline brings a retry
            node.raw.propose(client.command)

    def _retry_or_give_up(self, client: _Client) -> None:
        assert client.handle is not None
        assert client.operation is not None
        if client.attempts < self.options.attempts_max:
            self._attempt(client)
            return
        if client.operation.kind == "read":
            self.recorder.fail(client.handle)  # a read has no effect: leave it out
        # a write stays open in the recorder: it may or may not have taken effect
        client.handle = client.operation = None
        client.read_context = b""
        client.next_action_ms = self.now_ms

    # -- nemesis --

    def _nemesis(self) -> None:
        for node in self.nodes.values():
            restart_at_ms = node.restart_at_ms
            if not node.alive and restart_at_ms is not None and self.now_ms >= restart_at_ms:
                self._start(node)
                self.nemesis_log.append(f"{self.now_ms}: restart {node.node_id}")
        if self.final_phase:
            self._restore_voters()
            return
        if self.now_ms < self.next_nemesis_ms:
            return
        self.next_nemesis_ms = self.now_ms + self.rng.randint(100, 400)
        actions: dict[str, Callable[[], FaultOptions | None]] = {
            "isolate-leader": self._isolate_leader,
            "minority": self._random_partition,
            "bridge": self._bridge,
            "majority-ring": self._majority_ring,
            "crash": self._crash_one,
            "transfer-leader": self._transfer_leader,
            "membership": self._change_membership,
            "heal": lambda: self.background,
        }
        name = self.rng.choice(sorted(actions))
        faults = actions[name]()
        if faults is not None:
            self.network.set_faults(faults)
        self.nemesis_log.append(f"{self.now_ms}: {name}")

    def _leader(self) -> str | None:
        leaders = [
            (node.raw.hard_state().term, node.node_id)
            for node in self.nodes.values()
            if node.raw is not None and node.raw.soft_state().role is Role.LEADER
        ]
        return max(leaders)[1] if leaders else None

    def _isolate_leader(self) -> FaultOptions:
        leader = self._leader() or self.rng.choice(self.ids)
        return self.background.isolated(leader)

    def _random_partition(self) -> FaultOptions:
        shuffled = self.ids[:]
        self.rng.shuffle(shuffled)
        minority = shuffled[: (len(shuffled) - 1) // 2]
        return self.background.partitioned(minority, shuffled[len(minority) :])

    def _bridge(self) -> FaultOptions:
        """Two sides that only one node in the middle can hear."""
        shuffled = self.ids[:]
        self.rng.shuffle(shuffled)
        half = len(shuffled) // 2
        left, right = shuffled[:half], shuffled[half + 1 :]  # shuffled[half] is the bridge
        faults = self.background
        for a in left:
            for b in right:
                faults = faults.blocked(a, b).blocked(b, a)
        return faults

    def _majority_ring(self) -> FaultOptions:
        """Each node hears only its ring neighbours: overlapping majorities, none in common."""
        ring = self.ids[:]
        self.rng.shuffle(ring)
        size = len(ring)
        faults = self.background
        for position, a in enumerate(ring):
            near = {ring[(position + step) % size] for step in (-1, 0, 1)}
            for b in ring:
                if b not in near:
                    faults = faults.blocked(a, b)
        return faults

    def _transfer_leader(self) -> None:
        """Ask the leader to hand over to another node (which may be cut off or down)."""
        leader = self._leader()
        if leader is None:
            return
        node = self.nodes[leader]
        assert node.raw is not None
        node.raw.transfer_leader(self.rng.choice([i for i in self.ids if i != leader]))
        node.dirty = True

    def _change_membership(self) -> None:
        """Remove a voter other than the leader, or add a removed one back."""
        leader = self._leader()
        if leader is None or not self.options.membership_changes:
            return
        raw = self.nodes[leader].raw
        assert raw is not None
        voters = raw.status().voters
        missing = [node_id for node_id in self.ids if node_id not in voters]
        if missing:
            change = ConfChange(ConfChangeKind.ADD_VOTER, self.rng.choice(missing))
        else:
            others = [node_id for node_id in voters if node_id != leader]
            change = ConfChange(ConfChangeKind.REMOVE_VOTER, self.rng.choice(others))
        self.nemesis_log.append(f"{self.now_ms}: propose {change.kind.name} {change.node_id}")
        with contextlib.suppress(NotLeaderError):
            raw.propose_conf_change(change)
        self.nodes[leader].dirty = True

    def _restore_voters(self) -> None:
        """In the final phase every node must be a voter again (so every node converges)."""
        leader = self._leader()
        if leader is None or self.now_ms < self.next_nemesis_ms:
            return
        self.next_nemesis_ms = self.now_ms + 50
        raw = self.nodes[leader].raw
        assert raw is not None
        missing = [node_id for node_id in self.ids if node_id not in raw.status().voters]
        if missing:
            with contextlib.suppress(NotLeaderError):
                raw.propose_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, missing[0]))
            self.nodes[leader].dirty = True

    def _downtime_ms(self) -> int:
        """Often long enough to miss elections; sometimes so short the node is back within the
        same term, where a forgotten vote or entry would show."""
        if self.rng.random() < 0.4:
            return self.rng.randint(1, 20)
        return self.rng.randint(50, 500)

    def _crash_one(self) -> None:
        alive = [node for node in self.nodes.values() if node.alive]
        if not alive:
            return
        leader = self._leader()
        node = self.nodes[leader] if leader and self.rng.random() < 0.5 else self.rng.choice(alive)
        chance = self.rng.random()
        if chance < 0.3:
            node.crash_after_vote = True
            self.nemesis_log.append(f"{self.now_ms}: {node.node_id} will crash after voting")
        elif chance < 0.6:
            node.crash_in_next_ready = True
            self.nemesis_log.append(f"{self.now_ms}: {node.node_id} will crash before fsync")
        else:
            self._crash(node, self._downtime_ms())
            self.nemesis_log.append(f"{self.now_ms}: crash {node.node_id}")

    # -- the run --

    def _advance_to_next_event(self, limit_ms: int) -> None:
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

    def _round(self) -> None:
        self._nemesis()
        for node in self.nodes.values():
            if node.alive:
                self._step_node(node)
        for client in self.clients:
            self._act(client)
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
                self._start(node)

    def _converged(self) -> bool:
        if any(client.handle is not None or client.remaining > 0 for client in self.clients):
            return False
        applied = set()
        for node in self.nodes.values():
            assert node.raw is not None
            assert node.machine is not None
            status = node.raw.status()
            applied.add((status.commit, node.machine.applied_index))
        return len(applied) == 1 and self._leader() is not None

    def run(self) -> Report:
        """Faults, then heal and converge, then final reads; returns the report."""
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> Report:
        while self.now_ms < self.options.faulty_ms:
            self._advance_to_next_event(self.options.faulty_ms)
            self._round()
        self._heal()
        deadline_ms = self.now_ms + self.options.converge_ms_max
        while not self._converged():
            if self.now_ms >= deadline_ms:
                self.violations.append(f"no convergence within {self.options.converge_ms_max} ms")
                break
            self._advance_to_next_event(deadline_ms)
            self._round()
        if not self.violations:
            self._final_reads()
        return Report(
            seed=self.options.seed,
            history=self.recorder.history(),
            final_values=self._final_values(),
            violations=self.violations,
            nemesis_log=self.nemesis_log,
            acknowledged_writes=len(self.acknowledged),
            terms=len(self.leader_by_term),
            snapshots_installed=self.snapshots_installed,
            conf_changes_applied=self.conf_changes_applied,
        )

    def _final_reads(self) -> None:
        """One linearizable read per key, joining the history; retried until answered."""
        reader = self.clients[0]
        end_ms = self.now_ms + 3_000
        for key in self.options.keys:
            self._invoke(reader, Operation(0, key, "read", self.now_ms, None))
            while reader.handle is not None and self.now_ms < end_ms:
                reader.attempts = 1  # a final read retries until answered
                self._advance_to_next_event(end_ms)
                self._round()
            if reader.handle is not None:
                self.violations.append(f"the final read of {key} was never answered")
                self.recorder.fail(reader.handle)
                reader.handle = reader.operation = None

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
