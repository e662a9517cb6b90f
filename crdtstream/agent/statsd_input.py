"""The statsd receive pipeline: a reader thread drains the socket, the event loop applies batches.

Why a thread: asyncio reads one datagram per readiness event, and each call into the node's
parser has a fixed cost of most of a millisecond, so a loop that parses what one pass brought
parses one datagram at a time and the kernel drops the rest of a burst. Here:

- a :class:`DatagramReader` thread blocks for the first datagram, then drains the socket without
  blocking (``recv_into`` into one large preallocated buffer, a newline after each datagram) and
  hands the whole buffer over as one ``bytes``. When a drain found little, it naps a moment
  before it blocks again, so a slow trickle is read a handful of datagrams per wake-up, not one;
- a :class:`BatchQueue`, bounded in bytes, sits between reader and node: when it is full a read
  batch is dropped whole and counted, never silently;
- an :class:`Applier` on the event loop (the node is not thread-safe and the loop owns it) takes
  what is queued, at most ``apply_bytes_max`` per call so the node's timers run between calls,
  and waits up to ``apply_interval_ms`` for small batches to gather, so the parse's fixed cost
  is paid a few times a second at low rates, not once per datagram;
- TCP connections (newline-delimited lines) are read on the loop in large chunks and feed the
  same queue; a line longer than ``tcp_line_bytes_max`` is dropped and counted.

Kernel drops of the UDP socket (its ``drops`` column in ``/proc/net/udp``), the receive buffer
the kernel granted, queue drops, batch counts and parse times all appear in :meth:`StatsdInput
.status`, which the agent puts in ``/v1/status``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from crdtstream.agent.settings import StatsdSettings
from crdtstream.node import Node

_CompiledDrain = Callable[[int, bytearray, int, bool], tuple[int, int, int, int]]


def _load_compiled_drain() -> _CompiledDrain | None:
    """``drain`` of the compiled module, None when the package was built without a C compiler.
    Imported by name: static import analysis cannot see into an extension module."""
    try:
        module = importlib.import_module("crdtstream.agent._drain")
    except ImportError:
        return None
    drain: _CompiledDrain = module.drain
    return drain


_compiled_drain = _load_compiled_drain()
COMPILED_DRAIN = _compiled_drain is not None
"""Whether the reader drains sockets in C (``_drain.c``) rather than in a Python loop."""

__all__ = [
    "COMPILED_DRAIN",
    "DATAGRAM_BYTES_MAX",
    "READ_BUFFER_BYTES",
    "Applier",
    "BatchQueue",
    "DatagramReader",
    "LoopLagMonitor",
    "StatsdInput",
    "kernel_drops",
    "open_datagram_socket",
]

READ_BUFFER_BYTES = 4 << 20
"""One reader's buffer: a read batch is at most this big (about 3,000 full 1,400-byte
datagrams, or 100,000 one-line ones)."""
DATAGRAM_BYTES_MAX = 65_536
"""Room kept free for the next datagram: no UDP datagram is larger (a longer Unix datagram is
dropped whole and counted as truncated)."""
SMALL_DRAIN_DATAGRAMS = 64
NAP_S = 0.02
"""After a drain of fewer than ``SMALL_DRAIN_DATAGRAMS``, the reader sleeps this long before it
blocks again: the kernel buffers a trickle meanwhile, so it is read in bulk (each wake-up of
the thread costs tens of µs, which a datagram each would pay). A burst that starts during the
nap waits in the receive buffer: 20 ms of 100,000 datagrams/s is about 2 MB of kernel memory."""
NAP_BUFFER_BYTES_MIN = 1 << 20
"""With a receive buffer smaller than this (the kernel granted less), the nap is a fifth."""
STOP_DRAIN_BYTES_FACTOR = 2
"""At shutdown the reader drains at most this many receive buffers' worth: what the kernel held
when asked to stop, with a bound if senders keep sending."""
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


class BatchQueue:
    """A FIFO of read batches, bounded by the bytes it holds; safe between threads.

    ``on_ready`` is called (from the putting thread) each time the queue goes from empty to
    holding something, and not again until a :meth:`take` emptied it: one wake-up per burst.
    """

    def __init__(self, bytes_max: int, on_ready: Callable[[], None]) -> None:
        self.bytes_max = bytes_max
        self._on_ready = on_ready
        self._lock = threading.Lock()
        self._batches: collections.deque[tuple[bytes, int]] = collections.deque()
        self._bytes = 0
        self._signalled = False
        self.dropped_batches = 0
        self.dropped_datagrams = 0
        self.dropped_bytes = 0

    @property
    def bytes_queued(self) -> int:
        """Bytes waiting now."""
        return self._bytes

    def put(self, payload: bytes, datagrams: int) -> bool:
        """Queue ``payload`` (``datagrams`` datagrams, newline-separated); False, and counted as
        dropped, when it does not fit."""
        with self._lock:
            if self._bytes + len(payload) > self.bytes_max:
                self.dropped_batches += 1
                self.dropped_datagrams += datagrams
                self.dropped_bytes += len(payload)
                return False
            self._batches.append((payload, datagrams))
            self._bytes += len(payload)
            signal = not self._signalled
            self._signalled = True
        if signal:
            self._on_ready()
        return True

    def take(self, bytes_max: int) -> tuple[list[bytes], int]:
        """Batches from the front, up to ``bytes_max`` bytes (always at least one when any),
        and their datagram count."""
        payloads: list[bytes] = []
        datagrams = 0
        taken = 0
        with self._lock:
            while self._batches and (not payloads or taken + len(self._batches[0][0]) <= bytes_max):
                payload, count = self._batches.popleft()
                payloads.append(payload)
                datagrams += count
                taken += len(payload)
            self._bytes -= taken
            if not self._batches:
                self._signalled = False
        return payloads, datagrams


def open_datagram_socket(settings: StatsdSettings, *, reuse_port: bool = False) -> socket.socket:
    """A bound, blocking UDP or Unix datagram socket with the receive buffer asked for
    (``reuse_port``: one of several UDP sockets sharing the port).

    A stale Unix socket file at the path (left by a crash) is replaced; any other file there is
    an error.
    """
    if settings.scheme == "unix":
        path = Path(settings.path)
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(path.stat().st_mode):
                raise FileExistsError(f"{path} exists and is not a socket")
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address: str | tuple[str, int] = settings.path
    else:
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        address = (settings.host, settings.port)
    try:
        _ask_receive_buffer(sock, settings.receive_buffer_bytes)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _ask_receive_buffer(sock: socket.socket, size_bytes: int) -> None:
    # SO_RCVBUFFORCE passes net.core.rmem_max for a privileged process; otherwise the kernel
    # caps SO_RCVBUF there, and the granted size (reported) says what we got.
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        with contextlib.suppress(PermissionError):
            sock.setsockopt(socket.SOL_SOCKET, force, size_bytes)
            return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size_bytes)


def kernel_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped for ``sock`` (full receive buffer), from the ``drops``
    column of ``/proc/net/udp``/``udp6``; None where the kernel does not tell."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
    except OSError:
        return None
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 13 and fields[9] == inode:
                return int(fields[12])
    return None


class DatagramReader:
    """One thread that drains a datagram socket into read batches for a :class:`BatchQueue`.

    Only this thread reads the socket and writes these counters; the loop reads them.
    """

    def __init__(
        self,
        sock: socket.socket,
        queue: BatchQueue,
        buffer_bytes: int = READ_BUFFER_BYTES,
        *,
        compiled: bool = COMPILED_DRAIN,
    ) -> None:
        """``compiled`` False reads with the Python loop even where the C drain was built."""
        if compiled and _compiled_drain is None:
            raise RuntimeError("crdtstream.agent._drain was not built (no C compiler?)")
        self._compiled = _compiled_drain if compiled else None
        self.sock = sock
        self.queue = queue
        self._buffer = bytearray(max(buffer_bytes, 2 * DATAGRAM_BYTES_MAX))
        self._stopping = False
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self._drain_bytes_max = STOP_DRAIN_BYTES_FACTOR * max(granted, 1 << 20)
        self._nap_s = NAP_S if granted >= NAP_BUFFER_BYTES_MIN else NAP_S / 5
        if sock.family == socket.AF_UNIX:
            # A Unix datagram socket queues only net.unix.max_dgram_qlen datagrams (10 by
            # default) whatever its buffer: a nap would make senders block or drop.
            self._nap_s = 0.0
        self.datagrams = 0
        self.bytes = 0
        self.batches = 0
        self.truncated = 0
        self.failure: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="statsd-reader", daemon=True)

    def start(self) -> None:
        """Start reading."""
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Stop: the thread drains what the kernel still holds (bounded), queues it, and ends.
        An empty datagram to the socket wakes the thread if it is blocked."""
        self._stopping = True
        address = self.sock.getsockname()
        if isinstance(address, tuple) and address[0] in ("0.0.0.0", "::"):
            address = ("127.0.0.1" if address[0] == "0.0.0.0" else "::1", *address[1:])
        with (
            contextlib.suppress(OSError),
            socket.socket(self.sock.family, socket.SOCK_DGRAM) as waker,
        ):
            waker.sendto(b"", address)
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        """Whether the thread still runs."""
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._read_batch(blocking=True)
            self._drain_at_stop()
        except OSError as error:  # the socket failed under us: reported in status
            self.failure = error

    def _drain_at_stop(self) -> None:
        drained = 0
        while drained < self._drain_bytes_max:
            read = self._read_batch(blocking=False)
            if not read:
                return
            drained += read

    def _read_batch(self, *, blocking: bool) -> int:
        """Drain one batch (the first datagram blocking when ``blocking``) and queue it; returns
        how much was read (bytes, plus the datagrams that carried none), 0 when nothing."""
        end, count, truncated, empty = self._drain(blocking)
        self.truncated += truncated
        if count:
            self.datagrams += count
            self.bytes += end - count
            self.batches += 1
            with memoryview(self._buffer) as view:
                payload = bytes(view[:end])
            self.queue.put(payload, count)
            if self._nap_s and blocking and count < SMALL_DRAIN_DATAGRAMS and not self._stopping:
                time.sleep(self._nap_s)
        return end + truncated + empty

    def _drain(self, blocking: bool) -> tuple[int, int, int, int]:
        if self._compiled is not None:
            return self._compiled(self.sock.fileno(), self._buffer, 0, blocking)
        return self._drain_python(blocking)

    def _drain_python(self, blocking: bool) -> tuple[int, int, int, int]:
        """The compiled drain's loop in Python (``_drain.c`` says what it does)."""
        recv_into = self.sock.recv_into
        size = len(self._buffer)
        end = count = truncated = empty = 0
        flags = 0 if blocking else socket.MSG_DONTWAIT
        with memoryview(self._buffer) as view:
            while size - end > DATAGRAM_BYTES_MAX:
                try:
                    got = recv_into(view[end:], DATAGRAM_BYTES_MAX, flags | socket.MSG_TRUNC)
                except BlockingIOError:
                    break
                flags = socket.MSG_DONTWAIT
                if got == 0:
                    empty += 1
                elif got > DATAGRAM_BYTES_MAX:
                    truncated += 1
                else:
                    end += got
                    view[end] = 10  # the newline that ends the datagram's last line
                    end += 1
                    count += 1
        return end, count, truncated, empty


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
