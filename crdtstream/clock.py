"""Time, injected: the only module of the package that reads the wall or monotonic clock.

Pure cores never call this module; they receive ``now_ms`` arguments or ``tick()`` calls from the
driver. The driver owns a :class:`Clock`; tests and simulations hand it a :class:`ManualClock`.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of time in integer milliseconds."""

    def now_ms(self) -> int:
        """Wall-clock time in milliseconds since the Unix epoch (event time, windows)."""
        ...

    def monotonic_ms(self) -> int:
        """A clock that never goes backwards (timeouts, ticks); its origin is arbitrary."""
        ...


class SystemClock:
    """The real clock of the machine."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, from :func:`time.time_ns`."""
        return time.time_ns() // 1_000_000

    def monotonic_ms(self) -> int:
        """Milliseconds from :func:`time.monotonic_ns`."""
        return time.monotonic_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to, for tests and simulations."""

    def __init__(self, start_ms: int = 0) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        """The current manual time."""
        return self._now_ms

    def monotonic_ms(self) -> int:
        """The same manual time: a manual clock never goes backwards."""
        return self._now_ms

    def advance(self, delta_ms: int) -> int:
        """Move time forward by ``delta_ms`` (>= 0) and return the new time."""
        if delta_ms < 0:
            raise ValueError(f"a clock cannot go backwards: delta_ms={delta_ms}")
        self._now_ms += delta_ms
        return self._now_ms

    def set(self, now_ms: int) -> None:
        """Jump to ``now_ms``, which must not be earlier than the current time."""
        if now_ms < self._now_ms:
            raise ValueError(f"a clock cannot go backwards: {now_ms} < {self._now_ms}")
        self._now_ms = now_ms
