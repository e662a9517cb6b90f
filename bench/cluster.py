"""A real cluster on loopback with a fault layer between every pair of nodes.

:class:`Cluster` starts N ``crdtstream agent`` processes (3 by default, up to 7). Every
directed link ``a -> b`` goes through its own userspace TCP proxy (:class:`LinkProxy`,
toxiproxy-style): node ``a`` is given the proxy's address for peer ``b`` (ZeroMQ runs over TCP,
one connection per sending node), and a node keeps an address given for a peer by id over the
one the peer advertises, so every byte between nodes crosses a proxy. A proxy adds one-way
latency with jitter (bytes are never reordered: a TCP stream stays in order), throttles
bandwidth, and can be cut: a cut link closes its connections and refuses new ones, so nothing
passes until it heals. Partitions are sets of cut links: :meth:`Cluster.isolate` (one node
alone), :meth:`Cluster.partition` (any split, a minority and a majority), :meth:`Cluster.cut`
(one direction only), :meth:`Cluster.heal`.

The proxies run on one asyncio loop in a thread of the harness. Leaving the ``with`` block
(normally, on an exception, on Ctrl-C or on SIGTERM, which is turned into ``KeyboardInterrupt``
while the block runs in the main thread) kills every agent and stops every proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

from bench import processes

__all__ = [
    "NODES_MAX",
    "PROFILES",
    "Cluster",
    "LinkProxy",
    "LinkShape",
    "ProxyHost",
]

NODES_MAX = 7
CHUNK_BYTES = 65_536
QUEUE_CHUNKS_MAX = 64
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LinkShape:
    """What one direction of a link does to the bytes crossing it.

    ``latency_ms`` is added one way; each chunk gets up to ``jitter_ms`` more or less (uniform),
    without overtaking the chunk before it. ``bandwidth_bytes_per_s`` None is unthrottled.
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_bytes_per_s: float | None = None

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.jitter_ms < 0 or self.jitter_ms > self.latency_ms:
            raise ValueError(f"need 0 <= jitter_ms <= latency_ms, got {self}")
        if self.bandwidth_bytes_per_s is not None and self.bandwidth_bytes_per_s <= 0:
            raise ValueError(f"bandwidth_bytes_per_s must be > 0, got {self}")

    @property
    def round_trip_ms(self) -> float:
        """The round trip over two links of this shape, without jitter."""
        return 2 * self.latency_ms


PROFILES = {
    "lan": LinkShape(latency_ms=0.1, jitter_ms=0.02),
    "region": LinkShape(latency_ms=2.5, jitter_ms=0.5),
    "wan": LinkShape(latency_ms=20.0, jitter_ms=4.0),
}
"""Round trips of 0.2 ms (one rack), 5 ms (one region) and 40 ms +- jitter (across a continent)."""


class LinkProxy:
    """One directed link: listens on ``listen_port`` and forwards to ``target_port``, shaped."""

    def __init__(
        self, name: str, listen_port: int, target_port: int, shape: LinkShape, seed: int
    ) -> None:
        self.name = name
        self.listen_port = listen_port
        self.target_port = target_port
        self.shape = shape
        self.cut = False
        self.bytes_forwarded = 0
        self.connections_refused = 0
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on 127.0.0.1:``listen_port``."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        await self._drop_connections()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def set_cut(self, cut: bool) -> None:
        """Cut (connections dropped, new ones refused) or heal the link."""
        self.cut = cut
        if cut:
            await self._drop_connections()

    async def _drop_connections(self) -> None:
        tasks = list(self._open)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _delay_s(self) -> float:
        shape = self.shape
        jitter = self._rng.uniform(-shape.jitter_ms, shape.jitter_ms) if shape.jitter_ms else 0.0
        return (shape.latency_ms + jitter) / 1000.0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            self.connections_refused += 1
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
            pumps = [
                asyncio.create_task(self._pump(reader, upstream_writer)),
                asyncio.create_task(self._pump(upstream_reader, writer)),
            ]
            try:
                # Either side closing ends the connection, as a real one would.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except OSError:
            pass  # the target is down: the client sees its connection close
        except asyncio.CancelledError:
            pass  # the link was cut or the proxy closed: this connection ends here, quietly
        finally:
            self._open.discard(task)
            writer.transport.abort()
            if upstream_writer is not None:
                upstream_writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read chunks as they come, deliver each at its time (latency, jitter, bandwidth)."""
        loop = asyncio.get_running_loop()
        # Bounded: a throttled or slow link pushes back on its sender, as TCP would.
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS_MAX)

        async def deliver() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    return  # the sender closed: everything before it was delivered
                due_s, data = item
                wait_s = due_s - loop.time()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                writer.write(data)
                await writer.drain()
                self.bytes_forwarded += len(data)

        sender = asyncio.create_task(deliver())
        last_due_s = 0.0
        link_free_s = 0.0  # when the throttled link has finished sending what it was given
        try:
            while True:
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    break
                sent_s = max(loop.time(), link_free_s)
                bandwidth = self.shape.bandwidth_bytes_per_s
                if bandwidth is not None:
                    sent_s += len(data) / bandwidth
                link_free_s = sent_s
                # Delivered one latency after it was sent, never before the chunk ahead of it.
                due_s = max(last_due_s, sent_s + self._delay_s())
                last_due_s = due_s
                await queue.put((due_s, data))
            await queue.put(None)
            await sender
        except OSError:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sender


class ProxyHost:
    """An asyncio loop in a daemon thread that hosts proxies; calls block until done."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fault-proxies", daemon=True
        )
        self._thread.start()
        self.proxies: list[LinkProxy] = []

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        """Run ``coroutine`` on the proxies' loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    def add(self, proxy: LinkProxy) -> LinkProxy:
        """Start ``proxy`` on this host."""
        self.call(proxy.start())
        self.proxies.append(proxy)
        return proxy

    def set_cut(self, proxies: list[LinkProxy], cut: bool) -> None:
        """Cut or heal ``proxies`` together."""

        async def apply() -> None:
            await asyncio.gather(*(proxy.set_cut(cut) for proxy in proxies))

        self.call(apply())

    def close(self) -> None:
        """Stop every proxy and the loop, and join the thread."""
        if not self._loop.is_running():
            return

        async def close_all() -> None:
            await asyncio.gather(*(proxy.close() for proxy in self.proxies), return_exceptions=True)

        with contextlib.suppress(TimeoutError, RuntimeError):
            self.call(close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@dataclass
class Cluster:
    """N agents behind fault proxies (see the module docstring); use it as a context manager.

    ``policy`` rules (``PATTERN=MODE``) go to every node; every node is a Raft voter when
    ``voters`` is true. ``extra_toml`` is appended to every agent's settings file (which has a
    ``[node]`` table already, with ``quorum_cluster_size`` = N so that no minority takes itself
    for a majority, and a ``[transport]`` one). Ports are free ones, or consecutive from
    ``base_port``.
    """

    root: Path
    size: int = 3
    shape: LinkShape = field(default_factory=LinkShape)
    policy: tuple[str, ...] = ()
    voters: bool = True
    base_port: int | None = None
    timeout_ms: int = 2_000
    seed: int = 1
    extra_toml: str = ""
    agents: list[processes.Agent] = field(default_factory=list)
    links: dict[tuple[str, str], LinkProxy] = field(default_factory=dict)
    _host: ProxyHost | None = None
    _previous_handler: Any = None

    def __post_init__(self) -> None:
        if not 2 <= self.size <= NODES_MAX:
            raise ValueError(f"a cluster has 2 to {NODES_MAX} nodes, got {self.size}")

    @property
    def names(self) -> list[str]:
        """The node ids, ``n1`` to ``nN``."""
        return [f"n{index + 1}" for index in range(self.size)]

    # ------------------------------------------------------------------ life cycle

    def __enter__(self) -> Cluster:
        self._install_signal_handler()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill every agent and stop every proxy (idempotent)."""
        try:
            for agent in self.agents:
                agent.kill()
            if self._host is not None:
                self._host.close()
                self._host = None
        finally:
            self._restore_signal_handler()

    def _install_signal_handler(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def interrupt(number: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt(f"signal {number}")

        self._previous_handler = signal.signal(signal.SIGTERM, interrupt)

    def _restore_signal_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def _ports(self) -> Iterator[int]:
        if self.base_port is None:
            while True:
                yield processes.free_port()
        yield from range(self.base_port, self.base_port + 65_536)

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        ports = self._ports()
        names = self.names
        gossip = {name: next(ports) for name in names}
        http = {name: next(ports) for name in names}
        self._host = ProxyHost()
        for index, (source, target) in enumerate((s, t) for s in names for t in names if s != t):
            proxy = LinkProxy(
                f"{source}->{target}", next(ports), gossip[target], self.shape, self.seed + index
            )
            self.links[(source, target)] = self._host.add(proxy)
        for name in names:
            seen = {
                other: f"tcp://127.0.0.1:{self.links[(name, other)].listen_port}"
                for other in names
                if other != name
            }
            seen[name] = f"tcp://127.0.0.1:{gossip[name]}"
            config = self.root / f"{name}.toml"
            config.write_text(self._settings_toml())
            agent = processes.Agent(
                node_id=name,
                gossip_port=gossip[name],
                http_port=http[name],
                data_dir=self.root / name,
                peers=[f"{other}={seen[other]}" for other in names if other != name],
                log_path=self.root / f"{name}.log",
            )
            agent.extra_args = ["--config", str(config)]
            agent.extra_args += [item for rule in self.policy for item in ("--policy", rule)]
            if self.voters:
                for voter in names:
                    agent.extra_args += ["--raft-voter", f"{voter}={seen[voter]}"]
            self.agents.append(agent)
        for agent in self.agents:
            agent.start()
        for agent in self.agents:
            agent.wait_ready(30.0)

    def _settings_toml(self) -> str:
        # Reconnect quickly after a heal (the default backs off to 5 s), and refuse quorum and
        # strong requests that found no majority within the bench's deadline.
        return "\n".join(
            [
                "[node]",
                f"quorum_cluster_size = {self.size}",
                f"strong_timeout_ms = {self.timeout_ms}",
                f"quorum_timeout_ms = {self.timeout_ms}",
                "[transport]",
                "reconnect_ms_max = 300",
                self.extra_toml,
                "",
            ]
        )

    # ------------------------------------------------------------------ faults

    def agent(self, name: str) -> processes.Agent:
        """The agent called ``name``."""
        return next(agent for agent in self.agents if agent.node_id == name)

    def cut(self, source: str, target: str) -> None:
        """Cut the one direction ``source -> target``."""
        self._set([self.links[(source, target)]], True)

    def partition(self, *groups: list[str]) -> None:
        """Cut every link (both directions) between nodes of different groups; nodes named in
        no group form one more group."""
        named = {name for group in groups for name in group}
        rest = [name for name in self.names if name not in named]
        side = {name: index for index, group in enumerate([*groups, rest]) for name in group}
        self._set([p for (s, t), p in self.links.items() if side[s] != side[t]], True)

    def isolate(self, name: str) -> None:
        """Cut ``name`` off from every other node, both ways."""
        self.partition([name])

    def heal(self) -> None:
        """Restore every link."""
        self._set(list(self.links.values()), False)

    def pause(self, name: str) -> None:
        """Stop ``name`` with SIGSTOP: alive to the kernel (its sockets stay open), silent to
        its peers, as a long garbage-collection pause or a frozen VM."""
        self._signal(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """Let a paused ``name`` go on (SIGCONT)."""
        self._signal(name, signal.SIGCONT)

    def _signal(self, name: str, number: signal.Signals) -> None:
        process = self.agent(name).process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"{name} is not running")
        process.send_signal(number)

    def set_shape(self, shape: LinkShape) -> None:
        """Give every link ``shape`` from now on."""
        self.shape = shape
        for proxy in self.links.values():
            proxy.shape = shape

    def _set(self, proxies: list[LinkProxy], cut: bool) -> None:
        if self._host is None:
            raise RuntimeError("the cluster is not running")
        self._host.set_cut(proxies, cut)

    def bytes_forwarded(self) -> int:
        """Bytes every proxy delivered so far, both directions of every connection."""
        return sum(proxy.bytes_forwarded for proxy in self.links.values())

    # ------------------------------------------------------------------ waiting

    def wait_for_leader(self, deadline_s: float = 30.0) -> str:
        """The Raft leader's id once one is known to its peers (a strong write succeeded)."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            for agent in self.agents:
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    if agent.request("GET", "/v1/status")["raft"]["role"] == "leader":
                        return agent.node_id
            time.sleep(0.1)
        raise TimeoutError(f"no Raft leader within {deadline_s} s")
