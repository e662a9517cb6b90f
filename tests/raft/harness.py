"""A tiny in-test network for driving several RawNodes step by step (no clock, no sockets).

Each node has a :class:`MemoryStorage`; ``process_ready`` does what a driver does (persist, then
hand out messages, then apply, then advance) and records what was applied. Messages wait in one
queue per recipient until delivered, so tests choose exactly what happens when. Every message
is sent through the real codec (``encode_message``/``decode_message``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from crdtstream.config import RaftConfig
from crdtstream.raft.rawnode import RawNode
from crdtstream.raft.storage import MemoryStorage
from crdtstream.raft.types import (
    ConfChange,
    Entry,
    EntryKind,
    HardState,
    Message,
    ReadState,
    Ready,
    Role,
    decode_conf_change,
    decode_message,
    encode_message,
)

DEFAULT_CONFIG = RaftConfig(election_timeout_ticks=10, heartbeat_ticks=1)


@dataclass
class Peer:
    """One node with its storage and what it has applied so far."""

    node: RawNode
    storage: MemoryStorage
    applied: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    voters: tuple[str, ...] = ()


class Cluster:
    """Several peers and the messages in flight between them."""

    def __init__(
        self,
        node_ids: Iterable[str],
        config: RaftConfig = DEFAULT_CONFIG,
        seed: int = 0,
        voters: Iterable[str] | None = None,
    ) -> None:
        self.config = config
        self.seed = seed
        ids = list(node_ids)
        self.initial_voters = tuple(ids if voters is None else voters)
        self.peers: dict[str, Peer] = {}
        self.queues: dict[str, list[Message]] = {}
        self.cut: set[tuple[str, str]] = set()
        self.isolated_ids: set[str] = set()
        for node_id in ids:
            self.add_peer(node_id)

    # -- membership of the harness --

    def add_peer(self, node_id: str, storage: MemoryStorage | None = None) -> Peer:
        """Start a node (with fresh storage bootstrapped with the initial voters)."""
        storage = MemoryStorage(self.initial_voters) if storage is None else storage
        index = len(self.peers)
        rng = random.Random(self.seed * 1000 + index)
        node = RawNode(node_id, storage, self.config, rng, storage.snapshot().meta.index)
        peer = Peer(node, storage, voters=self.initial_voters)
        self.peers[node_id] = peer
        self.queues.setdefault(node_id, [])
        return peer

    def restart(self, node_id: str) -> None:
        """Crash ``node_id`` and start it again from its storage (everything persisted survives)."""
        old = self.peers.pop(node_id)
        self.queues[node_id] = []
        peer = self.add_peer(node_id, old.storage)
        peer.applied = []

    def node(self, node_id: str) -> RawNode:
        """The RawNode of ``node_id``."""
        return self.peers[node_id].node

    # -- the driver's loop --

    def process_ready(self, node_id: str) -> Ready | None:
        """Persist, send, apply and advance one Ready of ``node_id`` (None if it has none)."""
        peer = self.peers[node_id]
        if not peer.node.has_ready():
            return None
        ready = peer.node.ready()
        if ready.snapshot is not None:
            peer.storage.apply_snapshot(ready.snapshot)
            peer.voters = ready.snapshot.meta.voters
        peer.storage.append(ready.entries)
        if ready.hard_state is not None:
            peer.storage.set_hard_state(ready.hard_state)
        for message in ready.messages:
            self.send(message)
        for entry in ready.committed_entries:
            peer.applied.append(entry)
            if entry.kind is EntryKind.CONF_CHANGE:
                peer.voters = peer.node.apply_conf_change(decode_conf_change(entry.data))
        peer.read_states.extend(ready.read_states)
        peer.node.advance(ready)
        return ready

    def send(self, message: Message) -> None:
        """Put a message on the wire (through the codec) unless its link is cut."""
        sender, to = message.sender or "", message.to or ""
        if (sender, to) in self.cut or to not in self.queues:
            return
        self.queues[to].append(decode_message(encode_message(message)))

    def deliver(self, node_id: str) -> list[Message]:
        """Step every message queued for ``node_id``; returns them."""
        messages, self.queues[node_id] = self.queues[node_id], []
        for message in messages:
            self.peers[node_id].node.step(message)
        return messages

    def stabilize(self, max_rounds: int = 1_000) -> None:
        """Process Readies and deliver messages until nothing moves."""
        for _ in range(max_rounds):
            moved = False
            for node_id in sorted(self.peers):
                moved |= self.process_ready(node_id) is not None
            for node_id in sorted(self.peers):
                moved |= bool(self.deliver(node_id))
            if not moved:
                return
        raise AssertionError(f"no quiescence after {max_rounds} rounds (seed={self.seed})")

    # -- faults --

    def isolate(self, node_id: str) -> None:
        """Cut every link to and from ``node_id``."""
        for other in self.peers:
            if other != node_id:
                self.cut.update({(node_id, other), (other, node_id)})

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between different groups."""
        sets = [set(group) for group in groups]
        for a in sets:
            for b in sets:
                if a is not b:
                    self.cut.update((x, y) for x in a for y in b)

    def heal(self) -> None:
        """Restore every link."""
        self.cut.clear()

    # -- helpers for tests --

    def tick(self, node_id: str, ticks: int = 1) -> None:
        """Tick one node ``ticks`` times."""
        for _ in range(ticks):
            self.node(node_id).tick()

    def tick_all(self, ticks: int = 1) -> None:
        """Tick every node, stabilizing after each tick."""
        for _ in range(ticks):
            for node_id in sorted(self.peers):
                self.node(node_id).tick()
            self.stabilize()

    def elect(self, node_id: str) -> None:
        """Make ``node_id`` campaign and let the cluster settle."""
        self.node(node_id).campaign()
        self.stabilize()
        assert self.node(node_id).status().role is Role.LEADER, self.describe()

    def tick_until_leader(self, node_ids: Iterable[str], max_ticks: int = 1_000) -> str:
        """Tick ``node_ids`` (stabilizing each time) until one of them leads; returns it."""
        ids = sorted(node_ids)
        for _ in range(max_ticks):
            for node_id in ids:
                self.node(node_id).tick()
            self.stabilize()
            for node_id in ids:
                if self.node(node_id).status().role is Role.LEADER:
                    return node_id
        raise AssertionError(f"no leader among {ids}\n{self.describe()}")

    def leaders(self) -> list[str]:
        """Ids of nodes that believe they lead."""
        return [n for n, p in self.peers.items() if p.node.status().role is Role.LEADER]

    def applied_data(self, node_id: str) -> list[bytes]:
        """The data of the NORMAL entries ``node_id`` has applied, in order."""
        return [e.data for e in self.peers[node_id].applied if e.kind is EntryKind.NORMAL]

    def describe(self) -> str:
        """One line per node: role, term, leader, commit, applied, last index."""
        lines = [f"seed={self.seed}"]
        for node_id in sorted(self.peers):
            s = self.node(node_id).status()
            lines.append(
                f"{node_id}: {s.role.name} term={s.term} leader={s.leader} "
                f"commit={s.commit} applied={s.applied} last={s.last_index}"
            )
        return "\n".join(lines)


def conf_change_voters(entries: Iterable[Entry]) -> list[ConfChange]:
    """The membership changes among ``entries``."""
    return [decode_conf_change(e.data) for e in entries if e.kind is EntryKind.CONF_CHANGE]


def make_node(
    node_id: str,
    voters: Iterable[str],
    log_terms: Iterable[int] = (),
    term: int = 0,
    config: RaftConfig = DEFAULT_CONFIG,
    seed: int = 0,
) -> tuple[RawNode, MemoryStorage]:
    """A node whose stored log holds one entry per term in ``log_terms`` (indices from 1)."""
    storage = MemoryStorage(tuple(voters))
    storage.append([Entry(t, i, EntryKind.NORMAL, b"") for i, t in enumerate(log_terms, 1)])
    if term:
        storage.set_hard_state(HardState(term, None, 0))
    return RawNode(node_id, storage, config, random.Random(seed)), storage


def flush(node: RawNode, storage: MemoryStorage) -> Ready:
    """Persist and advance one Ready of ``node`` (an empty one if it has nothing)."""
    ready = node.ready()
    if ready.snapshot is not None:
        storage.apply_snapshot(ready.snapshot)
    storage.append(ready.entries)
    if ready.hard_state is not None:
        storage.set_hard_state(ready.hard_state)
    node.advance(ready)
    return ready


def outbox(node: RawNode, storage: MemoryStorage) -> list[Message]:
    """The messages ``node`` wants to send now (after persisting what they depend on)."""
    return list(flush(node, storage).messages)
