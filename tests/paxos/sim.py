"""A seeded simulation of per-key CASPaxos under a nemesis, recording a client history.

Every node is the real core (:class:`PaxosNode`) over :class:`CrashableAcceptorStorage`, on the
seeded :class:`MemoryNetwork` with every message through the real codec. This module is the
driver and does what a real one must, in order: save a Ready's records and sync them, only then
send its messages, deliver its outcomes, advance. A crash may strike between the save and the
sync, losing what was not synced. The network loses, duplicates, reorders and delays packets;
the nemesis partitions (isolated node, minority, bridge, majority ring) and crashes nodes; each
node's ticks run at its own skewed rate.

Clients are Jepsen-style processes with one operation in flight each, at a node picked at
random. Each key has a preferred proposer (the first of its rendezvous ranking): the other nodes
forward to it, and when it does not answer in time send on to the next proposer of the ranking
(or propose themselves when that is them) — so the nemesis's crashes and partitions of a key's
proposer make forwarders fall back and reroute, and several proposers contend for the key
again. A write not answered (or answered with a timeout) is retried at another node in the same
session (odd clients: a fresh session per attempt and an idempotency key); after the last
attempt it stays open in the history, its effect unknown. A read that fails leaves the
history. One key takes only conditional adds: the quota, which must never exceed its limit.

Checked during the run: persist-before-send, and that no two acceptors ever accepted different
values under one ballot. At the end everything heals and restarts, and a read through every
node gives the final values. Everything derives from one seed.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from crdtstream.config import WindowConfig
from crdtstream.paxos.node import Outcome, PaxosConfig, PaxosNode, Ready, proposer_ranking
from crdtstream.paxos.storage import persist_ready
from crdtstream.paxos.types import Ballot, Message, decode_messages, encode_messages
from crdtstream.raft.commands import Command, Result, request_digest
from crdtstream.raft.state_machine import KeyView
from tests.checkers.linearizability import HistoryRecorder, Operation
from tests.paxos.crashable import CrashableAcceptorStorage
from transports.memory import FaultOptions, MemoryNetwork, MemoryTransport, memory_address

TICK_MS = 5
CONFIG = PaxosConfig(
    tick_ms=TICK_MS,
    round_timeout_ticks=20,
    backoff_min_ticks=2,
    forward_timeout_min_ticks=4,
    forward_timeout_max_ticks=20,
    suspect_ticks=60,
)
WINDOW = WindowConfig(size_ms=1_000_000, allowed_lateness_ms=0, retention_windows=1)
TIMESTAMP_MS = 0
"""Every command lands in one window, so a key behaves as a single counter."""
QUOTA_KEY = "quota"


@dataclass(frozen=True, slots=True)
class Options:
    """The shape of one run; every random choice within it comes from ``seed``."""

    seed: int
    nodes: int = 3
    clients: int = 6
    keys: tuple[str, ...] = ("x", "y")
    operations_per_client: int = 8
    limit: int = 12
    faulty_ms: int = 2_000
    attempt_timeout_ms: int = 300
    attempts_max: int = 3
    settle_ms_max: int = 5_000


@dataclass
class Report:
    """What a run produced: the history, final values per node and key, and its faults."""

    seed: int
    history: list[Operation]
    final_values: dict[str, dict[str, int]]
    violations: list[str]
    nemesis_log: list[str]
    acknowledged_writes: int = 0
    crashes: int = 0
    restarts: int = 0
    partitions: int = 0
    records_lost: int = 0
    conflicts: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    unknown_outcomes: int = 0
    one_round_trips: int = 0
    forwarded: int = 0
    """Operations sent to a key's preferred proposer."""
    forwards_answered: int = 0
    fallbacks: int = 0
    """Forwarded operations proposed by their forwarder after no answer in time."""
    rerouted: int = 0
    """Forwarded operations sent on to the next proposer of the ranking after no answer."""
    leader_crashes: int = 0
    """Crashes of a node that was some key's preferred proposer."""
    leader_cut_off: int = 0
    """Partitions that left some key's preferred proposer without a majority."""


@dataclass
class SimNode:
    """One node: its storage survives crashes; the rest is rebuilt by :meth:`Simulation.start`."""

    node_id: str
    storage: CrashableAcceptorStorage
    tick_interval_ms: int
    paxos: PaxosNode | None = None
    endpoint: MemoryTransport | None = None
    next_tick_ms: int = 0
    crash_in_next_ready: bool = False
    restart_at_ms: int | None = None
    waiting: dict[int, Client] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.paxos is not None


@dataclass
class Client:
    """One process: a single operation in flight at a time."""

    number: int
    rng: random.Random
    remaining: int
    next_action_ms: int = 0
    sequence: int = 0
    handle: int | None = None
    operation: Operation | None = None
    attempts: int = 0
    deadline_ms: int = 0
    attempt_id: tuple[str, int] | None = None

    @property
    def client_id(self) -> str:
        return f"client-{self.number}"

    @property
    def uses_idempotency_keys(self) -> bool:
        return self.number % 2 == 1

    def attempt_session(self) -> str:
        if self.uses_idempotency_keys:
            return f"{self.client_id}/attempt-{self.attempts}"
        return self.client_id


class Simulation:
    """One seeded run; call :meth:`run` once."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.ids = [f"n{index}" for index in range(1, options.nodes + 1)]
        self.background = FaultOptions(
            drop_probability=self.rng.choice([0.0, 0.02, 0.1]),
            duplicate_probability=self.rng.choice([0.02, 0.05]),
            reorder_probability=self.rng.choice([0.05, 0.1]),
            reorder_delay_ms_max=20,
            delay_ms_min=1,
            delay_ms_max=self.rng.choice([2, 5, 15]),
        )
        self.network = MemoryNetwork(options.seed, self.background)
        self.now_ms = 0
        self.violations: list[str] = []
        self.nemesis_log: list[str] = []
        self.accepted_values: dict[Ballot, bytes] = {}
        self.nodes = {
            node_id: SimNode(
                node_id, CrashableAcceptorStorage(), self.rng.randint(TICK_MS * 7 // 10 + 1, 7)
            )
            for node_id in self.ids
        }
        for node in self.nodes.values():
            self.start(node)
        self.clients = [
            Client(index, random.Random(self.rng.random()), options.operations_per_client)
            for index in range(options.clients)
        ]
        self.recorder = HistoryRecorder()
        self.acknowledged = 0
        self.unknown_outcomes = 0
        self.final_phase = False
        self.next_nemesis_ms = 0
        self.crashes = self.restarts = self.partitions = 0
        self.conflicts = 0
        self.one_round_trips = 0
        self.forwarded = self.forwards_answered = self.fallbacks = self.rerouted = 0
        self.leader_crashes = self.leader_cut_off = 0
        self.leaders = {proposer_ranking(key, self.ids)[0] for key in [*options.keys, QUOTA_KEY]}

    # -- nodes --

    def start(self, node: SimNode) -> None:
        """Start (or restart) a node from its durable acceptor records."""
        rng = random.Random(self.rng.random())
        node.paxos = PaxosNode(node.node_id, self.ids, WINDOW, rng, CONFIG, node.storage.load())
        node.endpoint = self.network.endpoint(node.node_id)
        for peer in self.ids:
            if peer != node.node_id:
                node.endpoint.add_peer(peer, memory_address(peer))
        node.next_tick_ms = self.now_ms + node.tick_interval_ms
        node.restart_at_ms = None

    def crash(self, node: SimNode, restart_after_ms: int) -> None:
        assert node.endpoint is not None
        assert node.paxos is not None
        self.crashes += 1
        self.leader_crashes += node.node_id in self.leaders
        self._count_rounds(node.paxos)
        node.endpoint.close()
        node.storage.crash()
        node.paxos = node.endpoint = None
        node.waiting.clear()
        node.crash_in_next_ready = False
        node.restart_at_ms = self.now_ms + restart_after_ms

    def _step_node(self, node: SimNode) -> None:
        assert node.paxos is not None
        assert node.endpoint is not None
        for packet in node.endpoint.receive(10_000):
            for message in decode_messages(packet.payload):
                node.paxos.step(message)
        while self.now_ms >= node.next_tick_ms:
            node.paxos.tick()
            node.next_tick_ms += node.tick_interval_ms

    def _drain(self, node: SimNode) -> None:
        while node.paxos is not None and node.paxos.has_ready():
            self._process_ready(node, node.paxos.ready())

    def _process_ready(self, node: SimNode, ready: Ready) -> None:
        assert node.paxos is not None
        assert node.endpoint is not None
        if node.crash_in_next_ready and ready.records:
            node.storage.save(ready.records)  # written, never synced
            self.nemesis_log.append(f"{self.now_ms}: {node.node_id} crashed before fsync")
            self.crash(node, self._downtime_ms())
            return
        persist_ready(node.storage, ready)
        if node.storage.unsynced_writes:
            self.violations.append(f"{node.node_id}: answers would leave before fsync")
        for record in ready.records.values():
            if record.accepted[0] == 0:
                continue
            first = self.accepted_values.setdefault(record.accepted, record.value)
            if first != record.value:
                self.violations.append(f"two values accepted under ballot {record.accepted}")
        by_destination: dict[str, list[Message]] = defaultdict(list)
        for message in ready.messages:
            by_destination[message.to].append(message)
        for destination, messages in by_destination.items():
            node.endpoint.send(destination, encode_messages(messages))
        for outcome in ready.outcomes:
            self._deliver(node, outcome)
        node.paxos.advance(ready)

    def _count_rounds(self, paxos: PaxosNode) -> None:
        self.conflicts += paxos.counters.rounds_conflicted
        self.one_round_trips += paxos.counters.rounds_one_round_trip
        self.forwarded += paxos.counters.operations_forwarded
        self.forwards_answered += paxos.counters.forwards_answered
        self.fallbacks += paxos.counters.forward_fallbacks
        self.rerouted += paxos.counters.forwards_rerouted

    # -- clients --

    def _act(self, client: Client) -> None:
        if client.handle is not None:
            if self.now_ms >= client.deadline_ms:
                self._retry_or_give_up(client)
            return
        if client.remaining <= 0 or self.now_ms < client.next_action_ms:
            return
        client.remaining -= 1
        rng = client.rng
        key = rng.choice([*self.options.keys, QUOTA_KEY])
        if key == QUOTA_KEY:
            kind = "conditional_add" if rng.random() < 0.7 else "read"
        else:
            kind = rng.choice(["add", "add", "conditional_add", "read", "read"])
        if kind == "read":
            operation = Operation(client.number, key, "read", self.now_ms, None)
        else:
            limit = self.options.limit if kind == "conditional_add" else None
            amount = rng.randint(1, 3)
            operation = Operation(client.number, key, kind, self.now_ms, None, amount, limit)
            client.sequence += 1
        client.operation = operation
        client.handle = self.recorder.invoke(operation)
        client.attempts = 0
        self._attempt(client)

    def _command(self, client: Client) -> Command:
        operation = client.operation
        assert operation is not None
        idempotency_key = digest = ""
        if client.uses_idempotency_keys:
            idempotency_key = f"{client.client_id}:{client.sequence}"
            digest = request_digest(
                operation.key, "counter", operation.kind, operation.amount, operation.limit, 0
            )
        return Command(
            client.attempt_session(),
            client.sequence,
            operation.key,
            "counter",
            operation.kind,
            operation.amount,
            TIMESTAMP_MS,
            operation.limit,
            idempotency_key,
            digest,
        )

    def _attempt(self, client: Client, node_id: str | None = None) -> None:
        operation = client.operation
        assert operation is not None
        client.attempts += 1
        client.deadline_ms = self.now_ms + self.options.attempt_timeout_ms + 50
        node = self.nodes[node_id or client.rng.choice(self.ids)]
        client.attempt_id = None
        if node.paxos is None:
            return  # connection refused: the deadline brings a retry
        timeout_ticks = self.options.attempt_timeout_ms // TICK_MS
        if operation.kind == "read":
            operation_id = node.paxos.read(operation.key, timeout_ticks)
        else:
            operation_id = node.paxos.submit(operation.key, self._command(client), timeout_ticks)
        client.attempt_id = (node.node_id, operation_id)
        node.waiting[operation_id] = client

    def _deliver(self, node: SimNode, outcome: Outcome) -> None:
        client = node.waiting.pop(outcome.operation_id, None)
        if client is None or client.attempt_id != (node.node_id, outcome.operation_id):
            return
        operation = client.operation
        assert operation is not None
        if outcome.error:
            self.unknown_outcomes += outcome.unknown
            self._retry_or_give_up(client)
            return
        if operation.kind == "read":
            assert not isinstance(outcome.answer, Result)
            self._complete(client, value_of(outcome.answer))
            return
        result = outcome.answer
        assert isinstance(result, Result)
        if not result.ok:
            self.violations.append(f"write refused: {operation.describe()} -> {result}")
            return
        self.acknowledged += 1
        self._complete(client, result.applied if operation.kind == "conditional_add" else None)

    def _complete(self, client: Client, result: int | bool | None) -> None:
        assert client.handle is not None
        self.recorder.complete(client.handle, self.now_ms, result)
        client.handle = client.operation = client.attempt_id = None
        client.next_action_ms = self.now_ms + client.rng.randint(0, 40)

    def _retry_or_give_up(self, client: Client) -> None:
        assert client.handle is not None
        assert client.operation is not None
        if client.attempts < self.options.attempts_max or self.final_phase:
            self._attempt(client)
            return
        if client.operation.kind == "read":
            self.recorder.fail(client.handle)  # a read has no effect: it leaves the history
        # a write stays open: it may or may not have taken effect
        client.handle = client.operation = client.attempt_id = None
        client.next_action_ms = self.now_ms

    # -- the nemesis --

    def _nemesis(self) -> None:
        for node in self.nodes.values():
            if node.restart_at_ms is not None and self.now_ms >= node.restart_at_ms:
                self.start(node)
                self.restarts += 1
                self.nemesis_log.append(f"{self.now_ms}: restart {node.node_id}")
        if self.final_phase or self.now_ms < self.next_nemesis_ms:
            return
        self.next_nemesis_ms = self.now_ms + self.rng.randint(80, 300)
        action = self.rng.choice(
            ["isolate", "minority", "bridge", "ring", "crash", "crash-before-sync", "heal"]
        )
        shuffled = self.ids[:]
        self.rng.shuffle(shuffled)
        faults: FaultOptions | None = None
        if action == "isolate":
            faults = self.background.isolated(shuffled[0])
        elif action == "minority":
            minority = shuffled[: (len(shuffled) - 1) // 2]
            faults = self.background.partitioned(minority, shuffled[len(minority) :])
        elif action == "bridge":
            half = len(shuffled) // 2
            faults = self.background
            for a in shuffled[:half]:
                for b in shuffled[half + 1 :]:
                    faults = faults.blocked(a, b).blocked(b, a)
        elif action == "ring":
            faults = self.background
            size = len(shuffled)
            for position, a in enumerate(shuffled):
                near = {shuffled[(position + step) % size] for step in (-1, 0, 1)}
                for b in shuffled:
                    if b not in near:
                        faults = faults.blocked(a, b)
        elif action == "heal":
            faults = self.background
        else:
            alive = [node for node in self.nodes.values() if node.alive]
            if alive:
                node = self.rng.choice(alive)
                if action == "crash":
                    self.crash(node, self._downtime_ms())
                else:
                    node.crash_in_next_ready = True
        if faults is not None:
            self.network.set_faults(faults)
            self.partitions += action != "heal"
            self.leader_cut_off += any(self._cut_off(leader, faults) for leader in self.leaders)
        self.nemesis_log.append(f"{self.now_ms}: {action}")

    def _cut_off(self, node_id: str, faults: FaultOptions) -> bool:
        """Whether ``faults`` leave ``node_id`` unable to reach a majority (itself counted)."""
        reachable = sum(
            1
            for peer in self.ids
            if peer == node_id
            or (faults.can_pass(node_id, peer) and faults.can_pass(peer, node_id))
        )
        return reachable <= len(self.ids) // 2

    def _downtime_ms(self) -> int:
        if self.rng.random() < 0.4:
            return self.rng.randint(1, 20)
        return self.rng.randint(50, 400)

    # -- the run --

    def _advance(self, limit_ms: int) -> None:
        candidates = [limit_ms, self.now_ms + 10]
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
            self._drain(node)

    def _busy(self) -> bool:
        return any(c.handle is not None or c.remaining > 0 for c in self.clients)

    def run(self) -> Report:
        """Faults while clients run, then heal and restart all, then final reads."""
        while self.now_ms < self.options.faulty_ms:
            self._advance(self.options.faulty_ms)
            self._round()
        self.final_phase = True
        self.network.set_faults(FaultOptions(delay_ms_min=1, delay_ms_max=3))
        self.nemesis_log.append(f"{self.now_ms}: heal all, restart all")
        for node in self.nodes.values():
            node.crash_in_next_ready = False
            if not node.alive:
                self.start(node)
                self.restarts += 1
        deadline_ms = self.now_ms + self.options.settle_ms_max
        while self._busy() and self.now_ms < deadline_ms:
            self._advance(deadline_ms)
            self._round()
        if self._busy():
            self.violations.append("clients still busy after the network healed")
        final_values = self._final_reads()
        for node in self.nodes.values():
            if node.paxos is not None:
                self._count_rounds(node.paxos)
        stats = self.network.stats()
        return Report(
            seed=self.options.seed,
            history=self.recorder.history(),
            final_values=final_values,
            violations=self.violations,
            nemesis_log=self.nemesis_log,
            acknowledged_writes=self.acknowledged,
            crashes=self.crashes,
            restarts=self.restarts,
            partitions=self.partitions,
            records_lost=sum(node.storage.records_lost for node in self.nodes.values()),
            conflicts=self.conflicts,
            dropped=stats.dropped,
            duplicated=stats.duplicated,
            reordered=stats.reordered,
            unknown_outcomes=self.unknown_outcomes,
            one_round_trips=self.one_round_trips,
            forwarded=self.forwarded,
            forwards_answered=self.forwards_answered,
            fallbacks=self.fallbacks,
            rerouted=self.rerouted,
            leader_crashes=self.leader_crashes,
            leader_cut_off=self.leader_cut_off,
        )

    def _final_reads(self) -> dict[str, dict[str, int]]:
        """A read of every key through every node, joining the history."""
        reader = self.clients[0]
        values: dict[str, dict[str, int]] = {}
        for node_id in self.ids:
            for key in [*self.options.keys, QUOTA_KEY]:
                end_ms = self.now_ms + 2_000
                reader.operation = Operation(0, key, "read", self.now_ms, None)
                reader.handle = self.recorder.invoke(reader.operation)
                reader.attempts = 0
                self._attempt(reader, node_id)
                while _in_flight(reader) and self.now_ms < end_ms:
                    if self.now_ms >= reader.deadline_ms:
                        reader.attempts = 0
                        self._attempt(reader, node_id)
                    self._advance(end_ms)
                    self._round()
                if _in_flight(reader):
                    assert reader.handle is not None
                    self.violations.append(f"the final read of {key} at {node_id} never ended")
                    self.recorder.fail(reader.handle)
                    reader.handle = reader.operation = None
                    continue
                read = [op for op in self.recorder.history() if op.kind == "read"][-1]
                assert isinstance(read.result, int)
                values.setdefault(node_id, {})[key] = read.result
        return values


def _in_flight(client: Client) -> bool:
    """Whether the client still waits (a call, so type narrowing does not outlive the loop)."""
    return client.handle is not None


def value_of(view: KeyView | None) -> int:
    """The counter value a read saw (0 for a key never written)."""
    if view is None or not view.windows:
        return 0
    value = view.windows[-1][2]
    assert isinstance(value, int)
    return value
