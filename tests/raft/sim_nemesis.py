"""The nemesis of the Raft simulation: partitions, crashes, leadership and membership churn.

Every choice comes from the simulation's seeded random source, in a fixed order, so a seed
replays the same faults. Partition shapes follow Jepsen's: isolate the leader, a random
minority, a bridge (two sides that only one node hears), a majority ring (each node hears only
its neighbours: overlapping majorities with none in common).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from crdtstream.errors import NotLeaderError
from crdtstream.raft.types import ConfChange, ConfChangeKind
from transports.memory import FaultOptions

if TYPE_CHECKING:
    from sim import Simulation


_PARTITIONS = frozenset({"isolate-leader", "minority", "bridge", "majority-ring"})


class Nemesis:
    """Strikes every 100-400 ms of simulated time until the final phase, then restores voters."""

    def __init__(self, simulation: Simulation) -> None:
        self.sim = simulation
        self.next_action_ms = 300

    def act(self) -> None:
        """Restart nodes whose downtime is over, then maybe strike."""
        for node in self.sim.nodes.values():
            restart_at_ms = node.restart_at_ms
            if not node.alive and restart_at_ms is not None and self.sim.now_ms >= restart_at_ms:
                self.sim.start(node)
                self.sim.restarts += 1
                self.sim.nemesis_log.append(f"{self.sim.now_ms}: restart {node.node_id}")
        if self.sim.final_phase:
            self._restore_voters()
            return
        if self.sim.now_ms < self.next_action_ms:
            return
        self.next_action_ms = self.sim.now_ms + self.sim.rng.randint(100, 400)
        actions: dict[str, Callable[[], FaultOptions | None]] = {
            "isolate-leader": self._isolate_leader,
            "minority": self._random_partition,
            "bridge": self._bridge,
            "majority-ring": self._majority_ring,
            "crash": self._crash_one,
            "transfer-leader": self._transfer_leader,
            "membership": self._change_membership,
            "heal": lambda: self.sim.background,
        }
        name = self.sim.rng.choice(sorted(actions))
        faults = actions[name]()
        if faults is not None:
            self.sim.network.set_faults(faults)
            self.sim.partitions += name in _PARTITIONS
        self.sim.nemesis_log.append(f"{self.sim.now_ms}: {name}")

    def _isolate_leader(self) -> FaultOptions:
        leader = self.sim.leader() or self.sim.rng.choice(self.sim.ids)
        return self.sim.background.isolated(leader)

    def _random_partition(self) -> FaultOptions:
        shuffled = self.sim.ids[:]
        self.sim.rng.shuffle(shuffled)
        minority = shuffled[: (len(shuffled) - 1) // 2]
        return self.sim.background.partitioned(minority, shuffled[len(minority) :])

    def _bridge(self) -> FaultOptions:
        """Two sides that only one node in the middle can hear."""
        shuffled = self.sim.ids[:]
        self.sim.rng.shuffle(shuffled)
        half = len(shuffled) // 2
        left, right = shuffled[:half], shuffled[half + 1 :]  # shuffled[half] is the bridge
        faults = self.sim.background
        for a in left:
            for b in right:
                faults = faults.blocked(a, b).blocked(b, a)
        return faults

    def _majority_ring(self) -> FaultOptions:
        """Each node hears only its ring neighbours: overlapping majorities, none in common."""
        ring = self.sim.ids[:]
        self.sim.rng.shuffle(ring)
        size = len(ring)
        faults = self.sim.background
        for position, a in enumerate(ring):
            near = {ring[(position + step) % size] for step in (-1, 0, 1)}
            for b in ring:
                if b not in near:
                    faults = faults.blocked(a, b)
        return faults

    def _transfer_leader(self) -> None:
        """Ask the leader to hand over to another node (which may be cut off or down)."""
        leader = self.sim.leader()
        if leader is None:
            return
        node = self.sim.nodes[leader]
        assert node.raw is not None
        node.raw.transfer_leader(self.sim.rng.choice([i for i in self.sim.ids if i != leader]))
        node.dirty = True

    def _change_membership(self) -> None:
        """Remove a voter other than the leader, or add a removed one back."""
        leader = self.sim.leader()
        if leader is None or not self.sim.options.membership_changes:
            return
        raw = self.sim.nodes[leader].raw
        assert raw is not None
        voters = raw.status().voters
        missing = [node_id for node_id in self.sim.ids if node_id not in voters]
        if missing:
            change = ConfChange(ConfChangeKind.ADD_VOTER, self.sim.rng.choice(missing))
        else:
            others = [node_id for node_id in voters if node_id != leader]
            change = ConfChange(ConfChangeKind.REMOVE_VOTER, self.sim.rng.choice(others))
        self.sim.nemesis_log.append(
            f"{self.sim.now_ms}: propose {change.kind.name} {change.node_id}"
        )
        with contextlib.suppress(NotLeaderError):
            raw.propose_conf_change(change)
        self.sim.nodes[leader].dirty = True

    def _restore_voters(self) -> None:
        """In the final phase every node must be a voter again (so every node converges)."""
        leader = self.sim.leader()
        if leader is None or self.sim.now_ms < self.next_action_ms:
            return
        self.next_action_ms = self.sim.now_ms + 50
        raw = self.sim.nodes[leader].raw
        assert raw is not None
        missing = [node_id for node_id in self.sim.ids if node_id not in raw.status().voters]
        if missing:
            with contextlib.suppress(NotLeaderError):
                raw.propose_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, missing[0]))
            self.sim.nodes[leader].dirty = True

    def downtime_ms(self) -> int:
        """Often long enough to miss elections; sometimes so short the node is back within the
        same term, where a forgotten vote or entry would show."""
        if self.sim.rng.random() < 0.4:
            return self.sim.rng.randint(1, 20)
        return self.sim.rng.randint(50, 500)

    def _crash_one(self) -> None:
        alive = [node for node in self.sim.nodes.values() if node.alive]
        if not alive:
            return
        leader = self.sim.leader()
        node = (
            self.sim.nodes[leader]
            if leader and self.sim.rng.random() < 0.5
            else self.sim.rng.choice(alive)
        )
        chance = self.sim.rng.random()
        if chance < 0.3:
            node.crash_after_vote = True
            self.sim.nemesis_log.append(
                f"{self.sim.now_ms}: {node.node_id} will crash after voting"
            )
        elif chance < 0.6:
            node.crash_in_next_ready = True
            self.sim.nemesis_log.append(
                f"{self.sim.now_ms}: {node.node_id} will crash before fsync"
            )
        else:
            self.sim.crash(node, self.downtime_ms())
            self.sim.nemesis_log.append(f"{self.sim.now_ms}: crash {node.node_id}")
