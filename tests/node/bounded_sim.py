"""A seeded simulation of the bounded mode's core (:class:`BoundedKeys`) on a faulty network.

Nodes consume from one bounded key concurrently while the network loses, duplicates, delays
(reorders) and partitions frames (groups of every shape, and one-way cuts), and nodes crash and
come back, with or without their data directory. Every node runs as the driver does with a
local log: its frames wait in an outbox, and at a sync the changed windows are appended to its
disk (a list of records; sometimes the whole state replaces it, as a snapshot truncates the
log), the consumptions waiting for the log are answered, and only then does the outbox leave.
A crash keeps exactly the disk: whatever changed after the last sync is lost, and was neither
answered nor sent. A node that comes back with its data directory resumes its previous row from
the disk; without it, it starts a fresh row. Every run records which faults happened, so a test
can assert they did.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from crdtstream import wire
from crdtstream.config import PolicyRule
from crdtstream.crdt import BoundedCounter
from crdtstream.engine.bounded_mode import BoundedKeys, BoundedState, decode_bounded, share_of
from crdtstream.engine.tickets import Ticket
from crdtstream.errors import RefusedError

KEY = "quota.api"
STEP_MS = 10
ROUND_MS = 100
TIMEOUT_MS = 600


@dataclass
class _Node:
    node_id: str
    base_replica: str
    core: BoundedKeys | None
    offset_ms: int
    incarnation: int = 0
    disk: list[bytes] = field(default_factory=list)  # what survives a crash
    outbox: list[tuple[str, bytes]] = field(default_factory=list)  # frames waiting for a sync


@dataclass
class Outcome:
    """What one run did and saw."""

    seed: int
    limit: int
    acked: Counter[tuple[str, int]] = field(default_factory=Counter)  # (replica, window) -> n
    refused: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    rounds_to_rights: list[int] = field(default_factory=list)
    replicas_wiped: set[str] = field(default_factory=set)


class BoundedSimulation:
    """Nodes, a network with faults, and clients, stepped by one seeded random generator."""

    def __init__(self, seed: int, *, nodes: int = 5, limit: int = 60, window_ms: int = 4_000):
        self.rng = random.Random(seed)
        self.now_ms = 0
        self.node_ids = [f"n{i}" for i in range(nodes)]
        self.rule = PolicyRule(
            "quota.*", "bounded", limit=limit, window_ms=window_ms, members=tuple(self.node_ids)
        )
        self.outcome = Outcome(seed, limit)
        self.nodes = {node_id: self._start(node_id, f"{node_id}~0") for node_id in self.node_ids}
        self.in_flight: list[
            tuple[int, str, str, bytes]
        ] = []  # (deliver at, source, target, frame)
        self.groups: list[set[str]] | None = None
        self.one_way: tuple[str, str] | None = None
        self.loss = self.duplicate = self.delay_ms_max = 0.0
        self.faulty = True
        self.all_counters: list[BoundedKeys] = [n.core for n in self.nodes.values() if n.core]

    # ------------------------------------------------------------------ nodes

    def _start(self, node_id: str, base_replica: str) -> _Node:
        node = _Node(node_id, base_replica, None, self.rng.randrange(ROUND_MS))
        self._boot(node)
        return node

    def _boot(self, node: _Node) -> None:
        node_rng = random.Random(self.rng.getrandbits(64))

        def send(target: str, frame: bytes) -> None:
            node.outbox.append((target, frame))

        node.core = BoundedKeys(
            node.node_id,
            node.base_replica,
            node_rng,
            send,
            started_ms=self.now_ms,
            timeout_ms=TIMEOUT_MS,
            durable=True,
        )
        rows = [
            decode_bounded(record).replica
            for record in node.disk
            if wire.peek_tag(record) == wire.Tag.BOUNDED_STATE
        ]
        if node.disk:
            node.core.resume(node.disk, self._rule_of, self.now_ms)
        if rows:
            assert node.core.replica == rows[-1]
            self.outcome.faults["row_resumed"] += 1
        if hasattr(self, "all_counters"):
            self.all_counters.append(node.core)

    def crash(self, node_id: str, *, keep_data: bool) -> None:
        node = self.nodes[node_id]
        if node.core is None:
            return
        if node.core.unlogged or node.core.awaiting_log or node.outbox:
            self.outcome.faults["crash_lost_unsynced"] += 1
        if not keep_data:
            self.outcome.replicas_wiped.add(node.core.replica)
        # The process dies: waiting clients get no answer (their tickets stay open), the
        # outbox and every unsynced change go with it.
        node.core = None
        node.outbox.clear()
        node.incarnation += 1
        if not keep_data:
            node.disk = []
            node.base_replica = f"{node_id}~{node.incarnation}"
        self.outcome.faults["crash_kept_data" if keep_data else "crash_wiped_data"] += 1

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.core is None:
            self._boot(node)
            self.outcome.faults["restart"] += 1

    def sync(self, node: _Node) -> None:
        """The driver's group commit: log the changed windows (or, now and then, write the
        whole state as a snapshot that truncates the log), answer what waited for it, then
        let the outbox leave."""
        core = node.core
        if core is None:
            return
        if self.faulty and self.rng.random() < 0.02:
            node.disk = core.snapshot_records()
            self.outcome.faults["snapshot"] += 1
        else:
            node.disk.extend(core.take_log_records())
        core.logged()
        outbox, node.outbox = node.outbox, []
        for target, frame in outbox:
            self._send(node.node_id, target, frame)

    def sync_all(self) -> None:
        for node in self.nodes.values():
            self.sync(node)

    # ------------------------------------------------------------------ network

    def _cut(self, source: str, target: str) -> bool:
        if self.one_way == (source, target):
            return True
        if self.groups is None:
            return False
        return not any(source in group and target in group for group in self.groups)

    def _send(self, source: str, target: str, frame: bytes) -> None:
        if self.faulty and self.rng.random() < self.loss:
            self.outcome.faults["lost"] += 1
            return
        copies = 1
        if self.faulty and self.rng.random() < self.duplicate:
            copies = 2
            self.outcome.faults["duplicated"] += 1
        for _ in range(copies):
            delay = STEP_MS + (self.rng.randrange(int(self.delay_ms_max) + 1) if self.faulty else 0)
            self.in_flight.append((self.now_ms + delay, source, target, frame))

    def partition(self) -> None:
        """A partition of a random shape: halves, a node alone, many groups, or one way."""
        shape = self.rng.choice(["split", "isolate", "groups", "one_way"])
        ids = list(self.node_ids)
        self.rng.shuffle(ids)
        self.one_way = None
        if shape == "one_way":
            self.groups = None
            self.one_way = (ids[0], ids[1])
        elif shape == "isolate":
            self.groups = [{ids[0]}, set(ids[1:])]
        elif shape == "split":
            cut = self.rng.randrange(1, len(ids))
            self.groups = [set(ids[:cut]), set(ids[cut:])]
        else:
            self.groups = [{node_id} for node_id in ids]
            for node_id in ids[len(ids) // 2 :]:
                self.rng.choice(self.groups).add(node_id)
        self.outcome.faults[f"partition_{shape}"] += 1

    def heal(self) -> None:
        self.groups, self.one_way = None, None

    # ------------------------------------------------------------------ clients and time

    def consume(self, node_id: str, amount: int, *, sync: bool = True) -> Ticket | None:
        """A client's consumption at ``node_id``; answered at the node's next sync (at once
        when ``sync``)."""
        node = self.nodes[node_id]
        if node.core is None:
            return None
        ticket = Ticket()
        replica = node.core.replica
        try:
            node.core.write(
                ticket, KEY, self.rule, "conditional_add", amount, None, self.now_ms, self.now_ms
            )
        except RefusedError:
            self.outcome.refused += 1
            return ticket

        def record(done: Ticket) -> None:
            if done.error is None:
                window = self.now_ms // self.rule.window_ms
                self.outcome.acked[(replica, window)] += amount
            elif isinstance(done.error, RefusedError):
                self.outcome.refused += 1

        ticket.on_done(record)
        if sync:
            self.sync(node)
        return ticket

    def step(self) -> None:
        self.now_ms += STEP_MS
        due = [message for message in self.in_flight if message[0] <= self.now_ms]
        self.in_flight = [message for message in self.in_flight if message[0] > self.now_ms]
        if len(due) > 1 and self.faulty:
            self.rng.shuffle(due)
            self.outcome.faults["reordered"] += 1
        for _, source, target, frame in due:
            node = self.nodes[target]
            if node.core is None:
                self.outcome.faults["to_crashed"] += 1
                continue
            if self._cut(source, target):
                self.outcome.faults["partitioned"] += 1
                continue
            node.core.step(source, frame, self._rule_of, self.now_ms, self.now_ms)
        for node in self.nodes.values():
            if node.core is None:
                continue
            peers = [other for other in self.node_ids if other != node.node_id]
            gossip_round = (self.now_ms + node.offset_ms) % ROUND_MS < STEP_MS
            node.core.tick(self.now_ms, self.now_ms, peers, gossip_round=gossip_round)
        self.sync_all()
        self.check_safety()

    def _rule_of(self, key: str) -> PolicyRule | None:
        return self.rule if key.startswith("quota.") else None

    def check_safety(self) -> None:
        """The acknowledged consumption of every window is within the limit, and so is the
        consumption every live node's state and every disk show together."""
        per_window: Counter[int] = Counter()
        for (_, window), amount in self.outcome.acked.items():
            per_window[window] += amount
        for window, amount in per_window.items():
            assert amount <= self.outcome.limit, (
                f"seed={self.outcome.seed}: window {window} consumed {amount} > limit"
            )
        window = self.now_ms // self.rule.window_ms
        seen = self.union(window)
        for node in self.nodes.values():
            for record in node.disk:
                if wire.peek_tag(record) == wire.Tag.BOUNDED_RETIREMENT:
                    continue
                message = decode_bounded(record)
                assert isinstance(message, BoundedState)
                for entry in message.entries:
                    if entry.window == window:
                        seen.merge(entry.counter)
        assert seen.value <= self.outcome.limit, (
            f"seed={self.outcome.seed}: window {window} shows {seen.value} spent > limit"
        )

    # ------------------------------------------------------------------ views

    def union(self, window: int) -> BoundedCounter:
        """Every live node's state of ``window``, merged."""
        merged = BoundedCounter("observer")
        for node in self.nodes.values():
            if node.core is not None:
                state = node.core._windows.get((KEY, window))
                if state is not None:
                    merged.merge(state.counter)
        return merged

    def live(self) -> list[str]:
        return [node_id for node_id, node in self.nodes.items() if node.core is not None]


def run(seed: int, *, steps: int = 500) -> tuple[BoundedSimulation, Outcome]:
    """One faulty run, then a healthy phase that checks convergence and rights movement."""
    sim = BoundedSimulation(seed)
    rng = sim.rng
    sim.loss = rng.choice([0.0, 0.05, 0.2, 0.4])
    sim.duplicate = rng.choice([0.0, 0.1, 0.3])
    sim.delay_ms_max = rng.choice([0, 50, 300])
    for _ in range(steps):
        roll = rng.random()
        if roll < 0.02:
            sim.partition()
        elif roll < 0.03:
            sim.heal()
        elif roll < 0.036:
            sim.crash(rng.choice(sim.node_ids), keep_data=rng.random() < 0.5)
        elif roll < 0.05:
            sim.restart(rng.choice(sim.node_ids))
        # Concurrent demand from every node, heavier on a couple of them, answered at the
        # nodes' next sync; a crash may come first, and take what was not synced with it.
        for node_id in sim.node_ids:
            weight = 0.25 if node_id in ("n0", "n1") else 0.05
            if rng.random() < weight:
                sim.consume(node_id, rng.randint(1, 3), sync=False)
        if rng.random() < 0.006:
            sim.crash(rng.choice(sim.node_ids), keep_data=rng.random() < 0.7)
        sim.sync_all()
        sim.step()
    healthy_phase(sim)
    return sim, sim.outcome


def healthy_phase(sim: BoundedSimulation) -> None:
    """Heal everything, let state converge, check that no acknowledged consumption is lost,
    then measure how many gossip rounds a node with demand takes to obtain rights."""
    sim.heal()
    sim.faulty = False
    for node_id in sim.node_ids:
        sim.restart(node_id)
    for _ in range(3 * TIMEOUT_MS // STEP_MS):
        sim.step()
    window = sim.now_ms // sim.rule.window_ms
    wiped = sim.outcome.replicas_wiped
    for (replica, acked_window), amount in sim.outcome.acked.items():
        if acked_window < window - 1:
            continue  # no longer kept
        union = sim.union(acked_window)
        spent = union.spent_by(replica)
        if replica in wiped:
            # Spent before a crash that took the data directory, never sent: the count misses
            # it, but the rights it used are never issued again: those its row still shows, or
            # the node's share if the row never left the node (no later run takes that share).
            node_id = replica.split("~")[0]
            unseen_share = share_of(sim.rule, node_id) if not union.granted_by(replica) else 0
            assert amount <= spent + max(0, union.rights(replica)) + unseen_share, (
                f"seed={sim.outcome.seed}: crashed {replica} acked {amount}, row shows "
                f"{spent} spent and {union.rights(replica)} rights"
            )
        else:
            # Every acknowledged consumption was logged first: none is lost, crash or not.
            assert spent == amount, (
                f"seed={sim.outcome.seed}: {replica} acked {amount}, the cluster sees {spent}"
            )
    union = sim.union(window)
    for node in sim.nodes.values():
        assert node.core is not None
        state = node.core._windows.get((KEY, window))
        own = state.counter if state is not None else BoundedCounter("untouched")
        assert own == union, f"seed={sim.outcome.seed}: {node.node_id} has not converged"
    _measure_rights_movement(sim, window)


def _measure_rights_movement(sim: BoundedSimulation, window: int) -> None:
    """In the next window, a node asks for more than its share: count the gossip rounds until
    its peers' transfers cover it (every node is up and started before the window opened)."""
    while sim.now_ms // sim.rule.window_ms == window:
        sim.step()
    asker = sim.rng.choice(sim.node_ids)
    share = share_of(sim.rule, asker)
    amount = share + ((sim.rule.limit or 0) - share) // 4
    started_ms = sim.now_ms
    ticket = sim.consume(asker, amount)
    assert ticket is not None
    while not ticket.done:
        sim.step()
    assert ticket.error is None, (
        f"seed={sim.outcome.seed}: a healthy cluster refused {amount} at {asker}: {ticket.error}"
    )
    sim.outcome.rounds_to_rights.append(-(-(sim.now_ms - started_ms) // ROUND_MS))
