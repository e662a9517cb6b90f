"""Epoch-aligned tumbling and hopping windows, stored as slide-sized slices.

Rules of this file: pure arithmetic, time is always an argument. Every window is ``[start, end)``
with ``start`` a multiple of the slide (epoch-aligned, so every node computes the same windows
without talking). A hopping window of ``size_ms`` sliding by ``slide_ms`` is the union of
``size_ms / slide_ms`` consecutive slices; an event is written once, to its slice, and windows are
merged from slices at read time (Flink's slicing). Tumbling windows are the case slide == size.
Floor division keeps negative timestamps in the right slice (``-1`` belongs to ``[-slide, 0)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from crdtstream.config import WindowConfig, require

__all__ = ["TIMESTAMP_MS_LIMIT", "Hopping", "Tumbling", "Windows"]

TIMESTAMP_MS_LIMIT = 1 << 61
"""Event times must lie in ``(-limit, limit)``; beyond it window ends could overflow int64."""


@dataclass(frozen=True, slots=True)
class Windows:
    """Window geometry: ``size_ms`` long windows starting every ``slide_ms``."""

    size_ms: int
    slide_ms: int

    def __post_init__(self) -> None:
        require(self.size_ms > 0, "window.size_ms", "must be > 0", self.size_ms)
        require(self.slide_ms > 0, "window.slide_ms", "must be > 0", self.slide_ms)
        require(
            self.size_ms % self.slide_ms == 0,
            "window.slide_ms",
            "must divide size_ms",
            self.slide_ms,
        )

    @classmethod
    def from_config(cls, config: WindowConfig) -> Windows:
        """The geometry a :class:`WindowConfig` describes."""
        return cls(config.size_ms, config.effective_slide_ms)

    @property
    def slices_per_window(self) -> int:
        """How many slices make one window (1 for tumbling windows)."""
        return self.size_ms // self.slide_ms

    def slice_start(self, timestamp_ms: int) -> int:
        """Start of the slice holding ``timestamp_ms``."""
        return (timestamp_ms // self.slide_ms) * self.slide_ms

    def slice_starts(self, timestamps_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Vectorised :meth:`slice_start`."""
        return np.floor_divide(timestamps_ms, self.slide_ms) * self.slide_ms

    def window_end(self, window_start_ms: int) -> int:
        """End (exclusive) of the window starting at ``window_start_ms``."""
        return window_start_ms + self.size_ms

    def slices_of_window(self, window_start_ms: int) -> list[int]:
        """Starts of the slices whose union is the window starting at ``window_start_ms``."""
        return list(range(window_start_ms, window_start_ms + self.size_ms, self.slide_ms))

    def windows_of_slice(self, slice_start_ms: int) -> list[int]:
        """Starts of every window that contains the slice starting at ``slice_start_ms``."""
        first = slice_start_ms - self.size_ms + self.slide_ms
        return list(range(first, slice_start_ms + 1, self.slide_ms))

    def windows_of(self, timestamp_ms: int) -> list[tuple[int, int]]:
        """Every ``(start, end)`` window containing ``timestamp_ms``, oldest first."""
        return [
            (start, start + self.size_ms)
            for start in self.windows_of_slice(self.slice_start(timestamp_ms))
        ]

    def is_window_start(self, start_ms: int) -> bool:
        """True when ``start_ms`` is aligned to the slide."""
        return start_ms % self.slide_ms == 0


def Tumbling(size_ms: int) -> Windows:  # noqa: N802 - reads as the name of a window type
    """Back-to-back windows of ``size_ms``."""
    return Windows(size_ms, size_ms)


def Hopping(size_ms: int, slide_ms: int) -> Windows:  # noqa: N802 - reads as the name of a window type
    """Overlapping windows of ``size_ms`` starting every ``slide_ms`` (which divides the size)."""
    return Windows(size_ms, slide_ms)
