"""Three engines as Raft voters, their frames carried by hand: the leader's appends leave for
the driver before the leader syncs its own log (``Ready.send_while_persisting``), so that the
followers' fsyncs run during the leader's, as they did when the replica sent directly."""

from __future__ import annotations

import random
from collections.abc import Sequence

from crdtstream.config import PolicyRule, RaftConfig
from crdtstream.engine import Engine, EngineConfig
from crdtstream.engine.strong import StrongReplica
from crdtstream.raft.storage import MemoryStorage
from crdtstream.transport import Packet
from crdtstream.window.store import WindowStore

NAMES = ("a", "b", "c")
STEP_MS = 10
START_MS = 1_700_000_000_000


class RecordingStorage(MemoryStorage):
    """A Raft log in memory that notes each sync in a shared event list."""

    def __init__(self, name: str, voters: Sequence[str], events: list[tuple[str, str]]) -> None:
        super().__init__(voters)
        self.name = name
        self.events = events

    def sync(self) -> None:
        self.events.append((self.name, "sync"))


class Cluster:
    def __init__(self, seed: int) -> None:
        self.events: list[tuple[str, str]] = []
        self.in_flight: dict[str, list[Packet]] = {name: [] for name in NAMES}
        self.elapsed_ms = 0
        rng = random.Random(seed)
        self.engines = {name: self._engine(name, rng.getrandbits(64)) for name in NAMES}

    def _engine(self, name: str, seed: int) -> Engine:
        config = EngineConfig(
            node_id=name,
            listen_address=f"memory://{name}",
            seeds=tuple(other for other in NAMES if other != name),
            raft=RaftConfig(tick_ms=STEP_MS),
            raft_voters=NAMES,
            policy=(PolicyRule("quota.*", "strong"),),
        )
        return Engine(
            config,
            f"{name}~0001",
            WindowStore(f"{name}~0001"),
            random.Random(seed),
            now_ms=START_MS,
            monotonic_ms=0,
            raft_storage=RecordingStorage(name, NAMES, self.events),
            send_now=lambda: self._carry(name, sent_early=True),
        )

    def _carry(self, name: str, *, sent_early: bool = False) -> None:
        outbox = self.engines[name].take_outbox()
        if sent_early and outbox:
            self.events.append((name, "send"))
        for item in outbox:
            if item.peer_id in self.in_flight:
                self.in_flight[item.peer_id].append(Packet(name, item.payload))

    def step(self) -> None:
        self.elapsed_ms += STEP_MS
        for name, engine in self.engines.items():
            received, self.in_flight[name] = self.in_flight[name], []
            engine.tick(START_MS + self.elapsed_ms, self.elapsed_ms, received)
            self._carry(name)

    def leader(self) -> str | None:
        for name, engine in self.engines.items():
            if isinstance(engine.strong, StrongReplica) and engine.strong.is_leader:
                return name
        return None


def test_the_leader_hands_over_its_appends_before_it_syncs_its_log() -> None:
    for seed in range(3):
        cluster = Cluster(seed)
        for _ in range(300):
            cluster.step()
        leader = cluster.leader()
        assert leader is not None, f"seed={seed}"
        cluster.events.clear()
        ticket = cluster.engines[leader].write("quota.calls", "add", 1)
        while not ticket.done and cluster.elapsed_ms < 10_000:
            cluster.step()
        assert ticket.result().applied, f"seed={seed}"
        own = [event for name, event in cluster.events if name == leader]
        assert own[:2] == ["send", "sync"], f"seed={seed} leader events {own}"
