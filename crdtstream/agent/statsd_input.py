"""The statsd input of the agent: readers, a bounded queue, and the loop that applies batches.

Why not asyncio's datagram endpoint: it reads one datagram per readiness event, and each call
into the node's parser has a fixed cost of most of a millisecond, so a loop that parses what
one pass brought parses one datagram at a time and the kernel drops the rest of a burst. Here:

- reader threads (:mod:`crdtstream.agent.statsd_reader`) drain UDP or Unix datagram sockets in
  bulk into a :class:`~crdtstream.agent.statsd_reader.BatchQueue` bounded in bytes (when it is
  full a read batch is dropped whole and counted, never silently);
- an :class:`Applier` on the event loop (the node is not thread-safe and the loop owns it) takes
  what is queued, at most ``apply_bytes_max`` per call so the node's timers run between calls,
  and waits up to ``apply_interval_ms`` for small batches to gather, so the parse's fixed cost
  is paid a few times a second at low rates, not once per datagram;
- TCP connections (newline-delimited lines) are read on the loop in large chunks and feed the
  same queue; a line longer than ``tcp_line_bytes_max`` is dropped and counted;
- a :class:`LoopLagMonitor` measures how late the loop runs its timers.

Kernel drops, the receive buffer the kernel granted, queue drops, batch counts, apply times and
loop lag all appear in :meth:`StatsdInput.status`, which the agent puts in ``/v1/status``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import time

from crdtstream.agent.settings import StatsdSettings
from crdtstream.agent.statsd_reader import (
    BatchQueue,
    DatagramReader,
    kernel_drops,
    open_datagram_socket,
)
from crdtstream.node import Node

__all__ = ["COUNTER_NAMES", "Applier", "LoopLagMonitor", "StatsdInput"]

COUNTER_NAMES = (
    "datagrams_received",
    "bytes_received",
    "read_batches",
    "datagrams_truncated",
    "kernel_drops",
    "queue_dropped_batches",
    "queue_dropped_datagrams",
    "queue_dropped_bytes",
    "batches_applied",
    "datagrams_applied",
    "tcp_connections",
    "tcp_lines_too_long",
)
"""The counters of the statsd section that only grow (the rest are gauges and percentiles)."""

_RECENT_SAMPLES = 2_048
_LAG_SAMPLES = 100
"""The loop's lateness is reported over its last 100 samples: about the last two seconds."""


def _percentiles(samples: collections.deque[float]) -> dict[str, float]:
    """p50, p99 and max of ``samples`` (zeros when there are none)."""
    if not samples:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(samples)
    last = len(ordered) - 1
    return {
        "p50": ordered[last // 2],
        "p99": ordered[min(last, round(last * 0.99))],
        "max": ordered[last],
    }


class Applier:
    """Parses and applies queued batches on the event loop, one bounded call at a time."""

    def __init__(
        self,
        node: Node,
        queue_bytes_max: int,
        apply_interval_ms: int,
        apply_bytes_max: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.node = node
        self.loop = loop
        self.apply_interval_s = apply_interval_ms / 1_000
        self.apply_bytes_max = apply_bytes_max
        self.queue = BatchQueue(queue_bytes_max, self._wake_threadsafe)
        self._handle: asyncio.Handle | None = None
        self._last_apply_s = 0.0
        self.batches = 0
        self.datagrams = 0
        self.apply_cpu_seconds = 0.0
        self._recent_ms: collections.deque[float] = collections.deque(maxlen=_RECENT_SAMPLES)

    def _wake_threadsafe(self) -> None:
        if self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: stop() applies the rest
            self.loop.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        if self._handle is not None:
            return
        wait_s = self._last_apply_s + self.apply_interval_s - time.monotonic()
        if wait_s <= 0 or self.queue.bytes_queued >= self.apply_bytes_max:
            self._handle = self.loop.call_soon(self._apply_turn)
        else:
            self._handle = self.loop.call_later(wait_s, self._apply_turn)

    def _apply_turn(self) -> None:
        self._handle = None
        self.apply_once()
        if self.queue.bytes_queued:
            self._schedule()

    def apply_once(self) -> int:
        """Parse and apply up to ``apply_bytes_max`` of what is queued; returns the datagrams
        applied."""
        payloads, datagrams = self.queue.take(self.apply_bytes_max)
        if not payloads:
            return 0
        started = time.monotonic()
        cpu_started = time.thread_time()
        self.node.ingest_statsd(payloads)
        # CPU of this thread (on a busy machine the wall time is longer), and the wall time:
        # how long the loop was held.
        self.apply_cpu_seconds += time.thread_time() - cpu_started
        finished = time.monotonic()
        self._last_apply_s = finished
        self.batches += 1
        self.datagrams += datagrams
        self._recent_ms.append((finished - started) * 1_000)
        return datagrams

    def apply_all(self) -> None:
        """Apply everything queued now (at shutdown)."""
        while self.apply_once():
            pass

    def cancel(self) -> None:
        """Forget a scheduled turn (the caller applies the rest itself)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def status(self) -> dict[str, object]:
        """Queue and apply counters."""
        queue = self.queue
        return {
            "queue_bytes": queue.bytes_queued,
            "queue_bytes_max": queue.bytes_max,
            "queue_dropped_batches": queue.dropped_batches,
            "queue_dropped_datagrams": queue.dropped_datagrams,
            "queue_dropped_bytes": queue.dropped_bytes,
            "batches_applied": self.batches,
            "datagrams_applied": self.datagrams,
            "apply_cpu_seconds_total": self.apply_cpu_seconds,
            "apply_ms": _percentiles(self._recent_ms),
        }


class _LineStream(asyncio.Protocol):
    """One TCP connection: complete lines go to the queue in chunks; a partial line waits for
    the rest; a line over the bound is dropped (counted) up to its newline."""

    def __init__(self, owner: StatsdInput) -> None:
        self.owner = owner
        self.partial = b""
        self.discarding = False
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.owner.tcp_connections += 1
        self.owner.streams.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.streams.discard(self)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        owner.datagrams += 1
        owner.bytes += len(data)
        end = data.rfind(b"\n")
        if end < 0:
            self._hold(data)
            return
        head, self.partial = self.partial + data[: end + 1], data[end + 1 :]
        if self.discarding:
            head = head[head.find(b"\n") + 1 :]
            self.discarding = False
        if head:
            owner.applier.queue.put(head, 1)
        self._hold(b"")

    def _hold(self, data: bytes) -> None:
        if self.discarding:
            return
        self.partial += data
        if len(self.partial) > self.owner.settings.tcp_line_bytes_max:
            self.owner.tcp_lines_too_long += 1
            self.partial = b""
            self.discarding = True

    def eof_received(self) -> bool | None:
        """The sender closed: its last line needs no newline."""
        if self.partial and not self.discarding:
            self.owner.applier.queue.put(self.partial + b"\n", 1)
        self.partial = b""
        return None

    def finish(self) -> None:
        """At shutdown: keep what was received, a last line without newline too, and close."""
        self.eof_received()
        if self.transport is not None:
            self.transport.close()


class LoopLagMonitor:
    """How late the event loop runs a timer: the delay every loop callback (the node's pump,
    gossip rounds, Raft heartbeats, HTTP) can suffer beyond its schedule."""

    def __init__(self, period_s: float = 0.02) -> None:
        self.period_s = period_s
        self._recent_ms: collections.deque[float] = collections.deque(maxlen=_LAG_SAMPLES)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start measuring on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._measure())

    async def _measure(self) -> None:
        while True:
            expected = time.monotonic() + self.period_s
            await asyncio.sleep(self.period_s)
            self._recent_ms.append(max(0.0, (time.monotonic() - expected) * 1_000))

    def stop(self) -> None:
        """Stop measuring."""
        if self._task is not None:
            self._task.cancel()

    def status(self) -> dict[str, float]:
        """p50, p99 and max lateness (ms) over the last samples."""
        return _percentiles(self._recent_ms)


class StatsdInput:
    """The statsd input of one agent: socket, reader, queue and applier, and their counters."""

    def __init__(self, node: Node, settings: StatsdSettings) -> None:
        self.node = node
        self.settings = settings
        self.applier = Applier(
            node,
            settings.queue_bytes_max,
            settings.apply_interval_ms,
            settings.apply_bytes_max,
            asyncio.get_running_loop(),
        )
        self.sockets: list[socket.socket] = []
        self.streams: set[_LineStream] = set()
        self.readers: list[DatagramReader] = []
        self.server: asyncio.base_events.Server | None = None
        self.receive_buffer_bytes_granted = 0
        self.datagrams = 0
        self.bytes = 0
        self.tcp_connections = 0
        self.tcp_lines_too_long = 0
        self.lag = LoopLagMonitor()

    async def start(self) -> None:
        """Bind and start reading."""
        self.lag.start()
        if self.settings.scheme == "tcp":
            loop = asyncio.get_running_loop()
            self.server = await loop.create_server(
                lambda: _LineStream(self), self.settings.host, self.settings.port
            )
            return
        # Several UDP readers share the port through SO_REUSEPORT (the kernel spreads senders
        # over the sockets by their address); a Unix socket has one.
        count = self.settings.readers if self.settings.scheme == "udp" else 1
        for _ in range(count):
            sock = open_datagram_socket(self.settings, reuse_port=count > 1)
            self.sockets.append(sock)
            self.readers.append(DatagramReader(sock, self.applier.queue))
        self.receive_buffer_bytes_granted = self.sockets[0].getsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF
        )
        for reader in self.readers:
            reader.start()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop reading, drain what the kernel still holds and apply everything queued."""
        self.lag.stop()
        if self.server is not None:
            self.server.close()
            # Connections outlive their server: closed here, so that waiting for the server
            # cannot hang on a client that keeps its connection open.
            for stream in list(self.streams):
                stream.finish()
            await asyncio.wait_for(self.server.wait_closed(), timeout_s)
        for reader in self.readers:
            await asyncio.to_thread(reader.stop, timeout_s)
        self.applier.cancel()
        self.applier.apply_all()
        for sock in self.sockets:
            sock.close()
        if self.sockets and self.settings.scheme == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.settings.path)

    def counters(self) -> dict[str, int]:
        """The monotonic counters of :meth:`status`, for a metrics endpoint (``kernel_drops``
        only where the kernel tells)."""
        return {
            name: value
            for name, value in self.status().items()
            if name in COUNTER_NAMES and isinstance(value, int)
        }

    def status(self) -> dict[str, object]:
        """The ``statsd`` section of ``/v1/status``."""
        readers = self.readers
        counted = [kernel_drops(sock) for sock in self.sockets]
        drops = [count for count in counted if count is not None]
        failures = [str(reader.failure) for reader in readers if reader.failure is not None]
        status: dict[str, object] = {
            "address": self.settings.address,
            "receive_buffer_bytes_requested": self.settings.receive_buffer_bytes,
            "receive_buffer_bytes_granted": self.receive_buffer_bytes_granted,
            # For TCP a "datagram" is one read from a connection.
            "datagrams_received": self.datagrams + sum(reader.datagrams for reader in readers),
            "bytes_received": self.bytes + sum(reader.bytes for reader in readers),
            "readers": len(readers),
            "read_batches": sum(reader.batches for reader in readers),
            "datagrams_truncated": sum(reader.truncated for reader in readers),
            "kernel_drops": sum(drops) if drops and len(drops) == len(counted) else None,
            "reader_failures": failures,
            "tcp_connections": self.tcp_connections,
            "tcp_lines_too_long": self.tcp_lines_too_long,
            "event_loop_lag_ms": self.lag.status(),
        }
        status.update(self.applier.status())
        return status
