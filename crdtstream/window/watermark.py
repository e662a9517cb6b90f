"""The local watermark: how far event time has certainly progressed on this node.

``watermark_ms = max(newest event time seen, newest clock reading given to advance) -
allowed_lateness_ms``. Feeding the clock through :meth:`Watermark.advance` lets windows close when
data stops (idle streams), the commonest complaint about stream-processor windows. A slice is
closed once its end is at or behind the watermark, i.e. once time has passed its end plus the
allowed lateness; an event for a closed slice is late. Pure: time only arrives as arguments.
"""

from __future__ import annotations

__all__ = ["Watermark"]


class Watermark:
    """Monotone event-time progress with an allowed lateness."""

    def __init__(self, allowed_lateness_ms: int, time_ms: int | None = None) -> None:
        if allowed_lateness_ms < 0:
            raise ValueError(f"allowed_lateness_ms must be >= 0, got {allowed_lateness_ms}")
        self.allowed_lateness_ms = allowed_lateness_ms
        self._time_ms = time_ms

    @property
    def time_ms(self) -> int | None:
        """The newest time seen (event or clock), or None before anything was seen."""
        return self._time_ms

    @property
    def watermark_ms(self) -> int | None:
        """Newest time minus the allowed lateness; None before anything was seen."""
        if self._time_ms is None:
            return None
        return self._time_ms - self.allowed_lateness_ms

    def advance(self, now_ms: int) -> bool:
        """Move time to ``now_ms`` if that is newer; True when the watermark moved."""
        if self._time_ms is not None and now_ms <= self._time_ms:
            return False
        self._time_ms = now_ms
        return True

    def is_closed(self, end_ms: int) -> bool:
        """True when a slice or window ending at ``end_ms`` (exclusive) is closed."""
        watermark = self.watermark_ms
        return watermark is not None and end_ms <= watermark
