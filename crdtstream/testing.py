"""In-memory clusters for testing code that uses replicas, partitions included.

``crdtstream.testing.cluster(3, seed=7)`` starts three nodes, the real node and engine code, on
a seeded simulated network with a manual clock. Its replicas have the API of
:func:`crdtstream.open`'s; nothing moves unless asked:

- :meth:`Cluster.run` moves time by a number of milliseconds (gossip spreads, Raft elects,
  watched changes are detected);
- awaiting a replica's request (or the next event of a watch) moves time in steps until it
  completes, as a real cluster would while the caller waits: a quorum write during a partition
  therefore fails after its timeout of simulated time, at once in real time. Several requests
  awaited together (``asyncio.gather``) share the steps.

The same seed and the same calls give the same run. Faults: :meth:`Cluster.partition`,
:meth:`Cluster.isolate`, :meth:`Cluster.heal`, :meth:`Cluster.set_faults` (loss, duplication,
delay).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from crdtstream.clock import ManualClock
from crdtstream.config import (
    GossipConfig,
    MembershipConfig,
    PolicyRule,
    RaftConfig,
    WindowConfig,
)
from crdtstream.engine import Answer, Ticket
from crdtstream.node import Node, NodeConfig, PeerAddress
from crdtstream.replica import EngineSource, Replica, Value, policy_rules
from crdtstream.watch import ChangeFeed, Subscriber
from transports.memory import FaultOptions, MemoryNetwork, memory_address

__all__ = ["Cluster", "cluster"]

START_MS = 1_700_000_000_000
"""The manual clock's start: a plausible wall-clock time, so windows look like real ones."""


class SimulatedDriver:
    """Completes a replica's requests by moving the cluster's time while they wait."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name

    async def write(self, key: str, op: str, value: Value, options: dict[str, Any]) -> Answer:
        """The engine's write at the manual clock's now, settled by moving time."""
        engine = self.cluster.nodes[self.name].engine
        now_ms = self.cluster.clock.now_ms()
        return await self.settle(engine.write(key, op, value, now_ms=now_ms, **options))

    async def read(self, key: str, consistency: str | None) -> Answer:
        """The engine's read, settled by moving time."""
        engine = self.cluster.nodes[self.name].engine
        return await self.settle(engine.read(key, consistency=consistency))

    async def settle(self, ticket: Ticket) -> Answer:
        """Step the cluster until ``ticket`` completes (its deadline fails it in time)."""
        await self.cluster.wait_until(lambda: ticket.done)
        return ticket.result()

    async def wait(self, subscriber: Subscriber, woken: asyncio.Event) -> None:
        """Step the cluster until the watch has an event (or was closed)."""
        await self.cluster.wait_until(lambda: bool(subscriber.buffer) or subscriber.closed)

    def feed(self) -> ChangeFeed:
        """This node's feed, polled by the cluster every ``watch_interval_ms``."""
        return self.cluster.feed_of(self.name)


class Cluster:
    """Nodes on one simulated network and one manual clock (see the module docstring)."""

    def __init__(
        self,
        size: int,
        *,
        seed: int = 0,
        policy: Mapping[str, str] | Iterable[PolicyRule] | None = None,
        voters: int | Sequence[str] | None = None,
        window: WindowConfig | None = None,
        step_ms: int = 10,
        watch_interval_ms: int = 100,
        wait_ms_max: int = 600_000,
        **node_options: Any,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster has at least one node, got {size}")
        if step_ms < 1 or watch_interval_ms < step_ms:
            raise ValueError("step_ms must be >= 1 and watch_interval_ms >= step_ms")
        self.seed = seed
        self.step_ms = step_ms
        self.watch_interval_ms = watch_interval_ms
        self.wait_ms_max = wait_ms_max
        self.clock = ManualClock(START_MS)
        self.network = MemoryNetwork(seed, FaultOptions())
        self.names = [f"n{index}" for index in range(1, size + 1)]
        rules = policy_rules(policy)
        self._configs = {
            name: self._config(name, rules, window, voters, node_options) for name in self.names
        }
        self._rng = random.Random(seed)
        self.nodes: dict[str, Node] = {}
        self.replicas: list[Replica] = []
        self._feeds: dict[str, ChangeFeed] = {}
        self._next_poll_ms = self.clock.monotonic_ms() + watch_interval_ms
        self.steps = 0
        for name in self.names:
            node = Node(
                self._configs[name],
                self.network.endpoint(name),
                self.clock,
                random.Random(self._rng.getrandbits(64)),
            )
            self.nodes[name] = node
            self.replicas.append(Replica(node, SimulatedDriver(self, name)))

    def _config(
        self,
        name: str,
        rules: tuple[PolicyRule, ...],
        window: WindowConfig | None,
        voters: int | Sequence[str] | None,
        node_options: Mapping[str, Any],
    ) -> NodeConfig:
        options: dict[str, Any] = {
            "gossip": GossipConfig.local(),
            "membership": MembershipConfig.local(),
            "raft": RaftConfig(tick_ms=self.step_ms),
            "tick_interval_ms": self.step_ms,
            "strong_timeout_ms": 2_000,
            **node_options,
        }
        if window is not None:
            options["window"] = window
        return NodeConfig(
            node_id=name,
            listen_address=memory_address(name),
            peers=tuple(PeerAddress(o, memory_address(o)) for o in self.names if o != name),
            policy=rules,
            raft_voters=tuple(
                PeerAddress(v, memory_address(v)) for v in self._voters(voters, rules)
            ),
            **options,
        )

    def _voters(
        self, voters: int | Sequence[str] | None, rules: tuple[PolicyRule, ...]
    ) -> list[str]:
        """The voters asked for; by default the first three nodes when the policy has strong
        keys (a majority survives one failure), none otherwise."""
        if voters is None:
            strong = any(rule.mode == "strong" for rule in rules)
            return self.names[: min(3, len(self.names))] if strong else []
        if isinstance(voters, int):
            return self.names[:voters]
        unknown = [name for name in voters if name not in self.names]
        if unknown:
            raise ValueError(f"unknown voters {unknown}; the nodes are {self.names}")
        return list(voters)

    # ------------------------------------------------------------------ access

    def __getitem__(self, name_or_index: str | int) -> Replica:
        """A replica by node name (``"n1"``...) or index (0...)."""
        if isinstance(name_or_index, int):
            return self.replicas[name_or_index]
        return self.replicas[self.names.index(name_or_index)]

    def __iter__(self) -> Any:
        return iter(self.replicas)

    def __len__(self) -> int:
        return len(self.replicas)

    def feed_of(self, name: str) -> ChangeFeed:
        """The change feed of node ``name``, started on first use."""
        feed = self._feeds.get(name)
        if feed is None:
            feed = self._feeds[name] = ChangeFeed(EngineSource(self.nodes[name].engine))
        return feed

    # ------------------------------------------------------------------ time

    def step(self) -> None:
        """Move time by one step: deliver what is due, run every node once, poll the feeds
        when the watch interval has passed."""
        self.steps += 1
        self.clock.advance(self.step_ms)
        self.network.advance(self.step_ms)
        for node in self.nodes.values():
            node.pump()
        now = self.clock.monotonic_ms()
        if now >= self._next_poll_ms:
            self._next_poll_ms = now + self.watch_interval_ms
            for feed in self._feeds.values():
                feed.poll(now)

    def run(self, duration_ms: int) -> None:
        """Move time by ``duration_ms`` (whole steps)."""
        for _ in range(max(0, duration_ms) // self.step_ms):
            self.step()

    async def wait_until(self, condition: Any) -> None:
        """Step until ``condition()`` holds, yielding to other waiting coroutines between steps
        (one step per round of waiters, so awaiting two requests together does not move time
        twice as fast). Raises :class:`TimeoutError` after ``wait_ms_max`` of simulated time."""
        seen = self.steps
        waited_steps = 0
        while not condition():
            if waited_steps * self.step_ms >= self.wait_ms_max:
                raise TimeoutError(f"nothing after {self.wait_ms_max} ms of simulated time")
            if self.steps == seen:
                self.step()
            seen = self.steps
            waited_steps += 1
            await asyncio.sleep(0)

    # ------------------------------------------------------------------ faults

    def partition(self, *groups: Iterable[str | Replica]) -> None:
        """Split the network into ``groups`` of nodes (names or replicas); nodes named in no
        group form one more group together."""
        named = [[_name(member) for member in group] for group in groups]
        self.network.set_faults(self.network.faults.partitioned(*named))

    def isolate(self, member: str | Replica) -> None:
        """Cut one node off from every other, both ways."""
        self.network.set_faults(self.network.faults.isolated(_name(member)))

    def heal(self) -> None:
        """Remove partitions, blocks and clogs (loss and delay settings stay)."""
        self.network.set_faults(self.network.faults.healed())

    def set_faults(self, **options: Any) -> None:
        """Change loss, duplication, delay or reordering (the fields of
        :class:`transports.memory.FaultOptions`, e.g. ``drop_probability=0.2``)."""
        self.network.set_faults(dataclasses.replace(self.network.faults, **options))

    def close(self) -> None:
        """Close every node (they leave the cluster) and end every watch."""
        for feed in self._feeds.values():
            feed.close()
        for node in self.nodes.values():
            node.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Cluster:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


def _name(member: str | Replica) -> str:
    return member if isinstance(member, str) else member.node_id


def cluster(size: int, *, seed: int = 0, **options: Any) -> Cluster:
    """A :class:`Cluster` of ``size`` nodes named ``n1``, ``n2``...: ``policy``, ``voters``
    (a count or names; default the first three when the policy has strong keys), ``window``,
    ``step_ms``, ``watch_interval_ms`` and :class:`~crdtstream.node.NodeConfig` fields."""
    return Cluster(size, seed=seed, **options)
