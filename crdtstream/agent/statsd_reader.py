"""The statsd reader: a thread that drains a datagram socket into batches, and their queue.

A :class:`DatagramReader` thread blocks for the first datagram, then drains the socket without
blocking into one large preallocated buffer (a newline after each datagram, in C without the
GIL when ``_drain.c`` was built) and hands the whole buffer over as one ``bytes``. When a drain
found little it naps a moment before it blocks again, so a slow trickle is read a handful of
datagrams per wake-up, not one. A :class:`BatchQueue`, bounded in bytes, sits between readers
and the node: when it is full a read batch is dropped whole and counted, never silently.
:func:`kernel_drops` reads what the kernel dropped for a UDP socket.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from crdtstream.agent.settings import StatsdSettings

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
    "BatchQueue",
    "DatagramReader",
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


class BatchQueue:
    """A FIFO of read batches, bounded by the bytes it holds; safe between threads.

    ``on_ready`` is called (from the putting thread) each time the queue goes from empty to
    holding something, and not again until a :meth:`take` emptied it: one wake-up per burst.
    """

    def __init__(self, bytes_max: int, on_ready: Callable[[], None]) -> None:
        self.bytes_max = bytes_max
        self._on_ready = on_ready
        self._lock = threading.Lock()
        self._batches: deque[tuple[bytes, int]] = deque()
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
