"""A replica embedded in a Python program: ``crdtstream.open`` (``crdtstream.open_sync`` is in
:mod:`crdtstream.sync_replica`).

A :class:`Replica` is a :class:`~crdtstream.node.Node` (the engine, its transport, its clock)
behind verbs named for what they do (``add``, ``set_add``, ``conditional_add``, ``read``,
``watch``). It does not decide how a key is served: the policy does, as for every other entry
point. Two drivers run it: a live one (ZeroMQ, the system clock, the node's loop in a task) and
the simulated one of :mod:`crdtstream.testing`, which moves a manual clock while a caller waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterable, Mapping
from collections.abc import Sequence as SequenceABC
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from crdtstream.clock import SystemClock
from crdtstream.config import Mode, PolicyRule, WindowConfig
from crdtstream.engine import Answer, Engine
from crdtstream.engine.operations import strong_answer
from crdtstream.engine.strong import StrongReplica
from crdtstream.errors import ConfigError
from crdtstream.node import Node, NodeConfig, PeerAddress, parse_peer
from crdtstream.watch import ChangeFeed, Subscriber, WatchEvent
from crdtstream.window.results import WindowValue

__all__ = ["EngineSource", "Replica", "Value", "Watch", "open"]

WATCH_INTERVAL_MS = 100
"""How often a replica compares its keys' state for watchers (changes are coalesced per key
over this interval)."""
FINAL_PUSH_TIMEOUT_MS = 2_000
"""How long a closing replica waits for its gossip neighbours to take its last changes."""

Value = float | int | str | bytes


class Driver(Protocol):
    """How a replica's requests complete: over a running loop, or by moving simulated time."""

    async def write(self, key: str, op: str, value: Value, options: dict[str, Any]) -> Answer:
        """The answer of a write once it completes (its error raised)."""
        ...

    async def read(self, key: str, consistency: str | None) -> Answer:
        """The answer of a read once it completes (its error raised)."""
        ...

    async def wait(self, subscriber: Subscriber, woken: asyncio.Event) -> None:
        """Return once ``subscriber`` has something to read or is closed."""
        ...

    def feed(self) -> ChangeFeed:
        """The node's change feed, started on first use."""
        ...


class EngineSource:
    """What a :class:`~crdtstream.watch.ChangeFeed` reads, from one engine: CRDT state a window
    at a time (every key's value in one read), strong keys from this voter's state machine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def crdt_version(self) -> int:
        """The store's version."""
        return self.engine.store.version

    def crdt_changes_since(self, version: int) -> dict[tuple[int, int], set[str]]:
        """Per window, the keys with cells changed after ``version`` (from the slices'
        change stamps, as gossip's deltas are found; one array pass per changed slice)."""
        store = self.engine.store
        windows = store.windows
        changed: dict[tuple[int, int], set[str]] = {}
        for start, state in store.slices.items():
            for kind, latest in state.latest.items():
                if latest <= version:
                    continue
                cells = state.changed_since(kind, version, start)
                if not len(cells):
                    continue
                names = store.kind_keys[kind]
                keys = [names[local] for local in np.unique(cells.key).tolist()]
                for window_start in windows.windows_of_slice(start):
                    window = (window_start, windows.window_end(window_start))
                    changed.setdefault(window, set()).update(keys)
        return changed

    def crdt_windows(self) -> list[tuple[int, int]]:
        """Every retained window holding data."""
        windows = self.engine.store.windows
        return [(start, windows.window_end(start)) for start in self.engine.store.window_starts()]

    def crdt_window(self, window: tuple[int, int]) -> dict[str, object]:
        """Every key's value in ``window`` (one read of the window)."""
        return self.engine.store.read_window(window[0]).values

    def retention_floor_ms(self) -> int | None:
        """The store's retention floor."""
        return self.engine.store.retention_floor_ms()

    def is_final(self, start_ms: int, end_ms: int) -> bool:
        """Whether gossip calls the window final here."""
        return self.engine.gossip.is_final(start_ms, end_ms)

    def mode_of(self, key: str) -> Mode:
        """The key's mode under the policy."""
        return self.engine.mode_of(key)

    def raft_applied(self) -> int:
        """The Raft index applied on this voter (0 elsewhere)."""
        strong = self.engine.strong
        return strong.machine.applied_index if isinstance(strong, StrongReplica) else 0

    def strong_keys(self) -> list[str]:
        """The strong keys this voter holds (none elsewhere)."""
        strong = self.engine.strong
        return strong.machine.keys() if isinstance(strong, StrongReplica) else []

    def strong_windows(self, key: str) -> tuple[WindowValue, ...] | None:
        """A strong key's windows as this voter applied them (None off the voter set)."""
        strong = self.engine.strong
        if not isinstance(strong, StrongReplica):
            return None
        return strong_answer(key, strong.machine.read(key), "eventual").windows


class Watch:
    """An async iterator of :data:`~crdtstream.watch.WatchEvent` for one pattern; ends when
    closed (``close()``, or the replica closing)."""

    def __init__(self, driver: Driver, pattern: str, since: int | None, buffer: int | None) -> None:
        self._driver = driver
        self._woken = asyncio.Event()
        self._feed = driver.feed()
        self.subscriber = self._feed.subscribe(
            pattern, self._woken.set, since=since, buffer_events_max=buffer
        )

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        while True:
            event = self.subscriber.pop()
            if event is not None:
                return event
            if self.subscriber.closed:
                raise StopAsyncIteration
            self._woken.clear()
            await self._driver.wait(self.subscriber, self._woken)

    def close(self) -> None:
        """Stop watching; events already buffered are still read, then the iteration ends."""
        self._feed.unsubscribe(self.subscriber)

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class Replica:
    """One node of a crdtstream cluster inside this program (see :func:`open`)."""

    def __init__(self, node: Node, driver: Driver) -> None:
        self.node = node
        self._driver = driver

    @property
    def node_id(self) -> str:
        """This node's id."""
        return self.node.config.node_id

    async def write(self, key: str, op: str, value: Value, **options: Any) -> Answer:
        """Any write operation (``add``, ``set``, ``observe``, ``insert``, ``remove``,
        ``conditional_add``), with the options of :meth:`Engine.write
        <crdtstream.engine.Engine.write>` (``timestamp_ms``, ``kind``, ``limit``,
        ``idempotency_key``...): answered once as durable as the key's mode promises."""
        return await self._driver.write(key, op, value, options)

    async def add(self, key: str, amount: float = 1, **options: Any) -> Answer:
        """Add ``amount`` to the counter ``key`` (negative amounts subtract)."""
        return await self.write(key, "add", amount, **options)

    async def set(self, key: str, value: float, **options: Any) -> Answer:
        """Set the gauge ``key`` to ``value`` (last writer wins within a window)."""
        return await self.write(key, "set", value, **options)

    async def observe(self, key: str, value: float, **options: Any) -> Answer:
        """Record ``value`` in the distribution ``key`` (quantiles, count, sum, min, max)."""
        return await self.write(key, "observe", value, **options)

    async def set_add(self, key: str, item: str | bytes, **options: Any) -> Answer:
        """Add ``item`` to the set ``key`` (an observed-remove set)."""
        return await self.write(key, "insert", item, **options)

    async def set_remove(self, key: str, item: str | bytes, **options: Any) -> Answer:
        """Remove ``item`` from the set ``key``; ``Answer.removed`` says whether it was there."""
        return await self.write(key, "remove", item, **options)

    async def conditional_add(
        self, key: str, amount: float, *, limit: float, **options: Any
    ) -> Answer:
        """Add ``amount`` to the strong counter ``key`` unless the window's total would pass
        ``limit`` (``Answer.applied`` says which; ``Answer.value`` is the total). Refused with
        :class:`~crdtstream.errors.RefusedError` for a key the policy does not make strong."""
        return await self.write(key, "conditional_add", amount, limit=limit, **options)

    async def read(self, key: str, *, consistency: str | None = None) -> Answer:
        """Every retained window of ``key``, served with its mode or a weaker ``consistency``
        (``"eventual"``, ``"quorum"``, ``"strong"``); the engine's :class:`Answer`."""
        return await self._driver.read(key, consistency)

    def watch(
        self, pattern: str = "*", since: int | None = None, *, buffer: int | None = None
    ) -> Watch:
        """Changes of the keys matching the glob ``pattern``, as an async iterator of
        :class:`~crdtstream.watch.Change`, :class:`~crdtstream.watch.Reset` and
        :class:`~crdtstream.watch.Progress` events (semantics in :mod:`crdtstream.watch`):
        from now on, or after the sequence ``since``; ``buffer`` bounds the events held for a
        slow reader before it is reset."""
        return Watch(self._driver, pattern, since, buffer)

    def status(self) -> dict[str, object]:
        """The node's status (members, gossip, Raft, quorum...), as plain data."""
        return self.node.status()


class LiveDriver:
    """The node's loop in a task of the running event loop, the system clock."""

    def __init__(self, node: Node, watch_interval_ms: int) -> None:
        self.node = node
        self.watch_interval_ms = watch_interval_ms
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(node.run(self.stop))
        self._feed: ChangeFeed | None = None
        self._poller: asyncio.Task[None] | None = None

    async def write(self, key: str, op: str, value: Value, options: dict[str, Any]) -> Answer:
        """:meth:`Node.write <crdtstream.node.Node.write>`: the node's loop and the engine's
        deadlines complete it."""
        return await self.node.write(key, op, value, **options)

    async def read(self, key: str, consistency: str | None) -> Answer:
        """:meth:`Node.read <crdtstream.node.Node.read>`."""
        return await self.node.read(key, consistency=consistency)

    async def wait(self, subscriber: Subscriber, woken: asyncio.Event) -> None:
        """Sleep until the feed wakes the subscriber."""
        await woken.wait()

    def feed(self) -> ChangeFeed:
        """The feed, and its polling task, started on the first watch."""
        if self._feed is None:
            self._feed = ChangeFeed(EngineSource(self.node.engine))
            self._poller = asyncio.create_task(self._poll(self._feed))
        return self._feed

    async def _poll(self, feed: ChangeFeed) -> None:
        while True:
            feed.poll(self.node.clock.monotonic_ms())
            await asyncio.sleep(self.watch_interval_ms / 1_000)

    async def close(self) -> None:
        """Push the last changes to the gossip neighbours (bounded), then stop the node."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._feed is not None:
            self._feed.close()
        if not self.task.done():
            await _push_final_changes(self.node)
        self.stop.set()
        await asyncio.gather(self.task, return_exceptions=True)
        self.node.close()
        if not self.task.cancelled() and self.task.exception() is not None:
            raise self.task.exception()  # type: ignore[misc]


async def _push_final_changes(node: Node) -> None:
    interval_s = node.config.tick_interval_ms / 1_000
    await asyncio.sleep(2 * interval_s)  # the next ticks take the last changes into gossip
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FINAL_PUSH_TIMEOUT_MS / 1_000
    while node.engine.peers_behind() and loop.time() < deadline:
        await asyncio.sleep(interval_s)


def policy_rules(policy: Mapping[str, str] | Iterable[PolicyRule] | None) -> tuple[PolicyRule, ...]:
    """``{"quota.*": "strong"}`` (first matching pattern wins) as policy rules."""
    if policy is None:
        return ()
    if isinstance(policy, Mapping):
        return tuple(PolicyRule(pattern, mode) for pattern, mode in policy.items())  # type: ignore[arg-type]
    return tuple(policy)


def voter_addresses(
    voters: SequenceABC[str] | None,
    node_id: str,
    listen: str,
    peers: tuple[PeerAddress, ...],
    rules: tuple[PolicyRule, ...],
) -> tuple[PeerAddress, ...]:
    """The Raft voters: ``ID=ADDRESS`` entries (this node may be named by its id alone).

    Without ``voters``, a node alone (no peers) whose policy has strong keys is its own single
    voter; a node with peers has none (it cannot know its peers' ids), and its strong keys are
    refused, with the reason, until ``voters`` is given.
    """
    if voters is None:
        if peers or not any(rule.mode == "strong" for rule in rules):
            return ()
        return (PeerAddress(node_id, listen),)
    result = []
    for text in voters:
        if text == node_id:
            result.append(PeerAddress(node_id, listen))
        elif "=" in text:
            result.append(parse_peer(text))
        else:
            raise ConfigError(f"voters: {text!r} must be ID=ADDRESS (or this node's id)")
    return tuple(result)


@contextlib.asynccontextmanager
async def open(
    node_id: str,
    listen: str = "tcp://127.0.0.1:7001",
    peers: SequenceABC[str] = (),
    data_dir: str | Path | None = None,
    policy: Mapping[str, str] | Iterable[PolicyRule] | None = None,
    *,
    voters: SequenceABC[str] | None = None,
    window: WindowConfig | None = None,
    watch_interval_ms: int = WATCH_INTERVAL_MS,
    **node_options: Any,
) -> AsyncIterator[Replica]:
    """Run a replica in this event loop for the ``async with`` block.

    ``listen`` is this node's ZeroMQ address; ``peers`` the addresses (or ``ID=ADDRESS``) of
    nodes to join through. ``data_dir`` keeps the store, the node's identity and a voter's
    Raft log across restarts (None: in memory). ``policy`` maps key globs to modes, first match
    wins (``{"quota.*": "strong", "orders.*": "quorum"}``; other keys are eventual).
    ``voters`` are the Raft voters as ``ID=ADDRESS`` (see :func:`voter_addresses` for the
    default). ``watch_interval_ms`` is how often watched keys are compared (the coalescing
    interval). Other keyword arguments are :class:`~crdtstream.node.NodeConfig` fields
    (``quorum_timeout_ms``, ``gossip``...). On exit the replica hands its last changes to its
    neighbours (bounded), leaves the cluster, writes its snapshot and closes its socket.
    """
    from transports.zeromq import ZmqTransport  # imported only when a replica opens

    config = node_config(node_id, listen, peers, data_dir, policy, voters, window, node_options)
    transport = ZmqTransport(node_id, listen, config.transport)
    try:
        node = Node(config, transport, SystemClock(), random.Random())
    except BaseException:
        transport.close()
        raise
    driver = LiveDriver(node, watch_interval_ms)
    try:
        yield Replica(node, driver)
    finally:
        await driver.close()


def node_config(
    node_id: str,
    listen: str,
    peers: SequenceABC[str],
    data_dir: str | Path | None,
    policy: Mapping[str, str] | Iterable[PolicyRule] | None,
    voters: SequenceABC[str] | None,
    window: WindowConfig | None,
    node_options: Mapping[str, Any],
) -> NodeConfig:
    """The :class:`NodeConfig` of :func:`open`'s arguments."""
    if isinstance(peers, str):
        raise ConfigError("peers is a list of addresses, not one string")
    peer_addresses = tuple(parse_peer(text) for text in peers)
    rules = policy_rules(policy)
    extra = dict(node_options)
    if window is not None:
        extra["window"] = window
    return NodeConfig(
        node_id=node_id,
        listen_address=listen,
        peers=peer_addresses,
        data_dir=None if data_dir is None else Path(data_dir),
        policy=rules,
        raft_voters=voter_addresses(voters, node_id, listen, peer_addresses, rules),
        **extra,
    )
