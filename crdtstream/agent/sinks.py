"""Push sinks: final windows sent to a metrics backend. Graphite's plaintext protocol first.

A sink takes :class:`Point` objects (``enqueue``, never blocking, into a bounded buffer) and
sends what it holds (``flush``, a coroutine that returns whether everything was sent). The
exporter (:mod:`crdtstream.agent.export`) decides what to enqueue and records progress only
after a successful flush, so a point is never counted as exported before it left the node.

Another backend plugs in by implementing :class:`Sink`: an OTLP sink would map each point to a
data point with delta temporality and ``start_time_unix_nano`` = the window start (a counter
window is exactly a delta sum); a Prometheus remote-write sink would keep running values (as
``/metrics`` does) and send cumulative samples stamped with the window end.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["GraphiteSink", "Point", "Sink", "SinkStats", "graphite_line"]

BUFFER_LINES_MAX = 100_000
CONNECT_TIMEOUT_S = 5.0
_GRAPHITE_UNSAFE = re.compile(r"[\s;=~!^]")


@dataclass(frozen=True, slots=True)
class Point:
    """One value of one series: ``name`` and ``tags`` from the key, stamped ``timestamp_s``
    (the window start), with ``window_start_ms`` kept for progress."""

    name: str
    tags: Mapping[str, str]
    value: float
    timestamp_s: int
    window_start_ms: int


class Sink(Protocol):
    """Where final windows go. ``enqueue`` never blocks and never raises; ``flush`` sends
    everything buffered and returns True, or keeps it for the next flush and returns False."""

    def enqueue(self, points: Sequence[Point]) -> None:
        """Buffer ``points`` (the oldest are dropped, and counted, past the limit)."""

    async def flush(self) -> bool:
        """Send the buffer; True when it is empty afterwards."""

    def oldest_pending_window_ms(self) -> int | None:
        """The start of the oldest window with a point still buffered."""


@dataclass(slots=True)
class SinkStats:
    """Counts of what a sink did."""

    points_sent: int = 0
    points_dropped: int = 0
    flushes_failed: int = 0
    bytes_sent: int = 0
    closes_failed: int = 0
    """Connections that failed to close after their points were sent (not sent again)."""

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain mapping (for ``/metrics``)."""
        return {
            "points_sent": self.points_sent,
            "points_dropped": self.points_dropped,
            "flushes_failed": self.flushes_failed,
            "sent_bytes": self.bytes_sent,
            "closes_failed": self.closes_failed,
        }


def _safe(text: str) -> str:
    return _GRAPHITE_UNSAFE.sub("_", text)


def graphite_line(point: Point) -> bytes:
    """``name;tag=value value timestamp\\n``: Graphite 1.1's tagged plaintext form (tags
    sorted; characters Graphite reserves replaced by ``_``)."""
    path = _safe(point.name)
    for tag, value in sorted(point.tags.items()):
        path += f";{_safe(tag)}={_safe(value) or '_'}"
    value = repr(float(point.value)) if math.isfinite(point.value) else "nan"
    return f"{path} {value} {point.timestamp_s}\n".encode()


class GraphiteSink:
    """Graphite plaintext over TCP, one connection per flush, with a bounded buffer.

    A failed flush keeps every buffered point for the next one (the caller retries with
    backoff); past ``buffer_lines_max`` the oldest points are dropped and counted.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        buffer_lines_max: int = BUFFER_LINES_MAX,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.buffer: deque[Point] = deque()
        self.buffer_lines_max = buffer_lines_max
        self.stats = SinkStats()

    def enqueue(self, points: Iterable[Point]) -> None:
        """Buffer ``points``; the oldest go first when the buffer is full."""
        self.buffer.extend(points)
        self._bound()

    def _bound(self) -> None:
        overflow = len(self.buffer) - self.buffer_lines_max
        for _ in range(max(0, overflow)):
            self.buffer.popleft()
        self.stats.points_dropped += max(0, overflow)

    def oldest_pending_window_ms(self) -> int | None:
        """The start of the oldest window with a point still buffered."""
        return min((p.window_start_ms for p in self.buffer), default=None)

    async def flush(self) -> bool:
        """Send everything buffered on one connection; False (buffer kept) on any failure."""
        if not self.buffer:
            return True
        # Taken out while sending: points enqueued meanwhile wait for the next flush.
        points = list(self.buffer)
        self.buffer.clear()
        payload = b"".join(graphite_line(point) for point in points)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout_s
            )
            try:
                writer.write(payload)
                await asyncio.wait_for(writer.drain(), self.connect_timeout_s)
            finally:
                writer.close()
        except (OSError, TimeoutError):
            self.stats.flushes_failed += 1
            self.buffer.extendleft(reversed(points))
            self._bound()
            return False
        self.stats.points_sent += len(points)
        self.stats.bytes_sent += len(payload)
        try:
            await asyncio.wait_for(writer.wait_closed(), self.connect_timeout_s)
        except (OSError, TimeoutError):
            # The payload was handed over already: sending it again would export it twice.
            self.stats.closes_failed += 1
        return not self.buffer
