"""Windowed aggregates as the running values a scraper expects.

A window's value is a per-window aggregate (a counter's sum over ten seconds); Prometheus wants
a counter that only grows. :class:`RunningAggregates` folds every **final** window into per-key
running values once, in window order, and keeps them after the window itself has expired:

- a counter's running total is the sum of the key's values over every final window this
  process has folded since it started (so ``rate()`` gives the per-second rate of the statsd
  counter); a window with a negative sum is left out and counted (:meth:`Aggregate.fold`).
  It starts at 0 when the process starts (the ``_created`` time is the start of the first window
  folded), which Prometheus treats as an ordinary counter reset;
- a distribution's count and sum are running the same way; its quantiles are those of the newest
  final window;
- gauges, max/min, distinct counts and set sizes are the value of the newest final window.

A final value never changes (DESIGN §3), so folding each final window once is exact. With
hopping windows only the windows starting at a multiple of ``size_ms`` are folded, so no event
is counted twice. A window evicted before it became final here is never folded; with the default
retention (60 windows) that takes a finality delay of ten minutes. A key with no window newer
than ``idle_ttl_ms`` drops out, with its running values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from crdtstream.node import Node
from crdtstream.policy import RESERVED_PREFIX

__all__ = [
    "DEFAULT_IDLE_TTL_MS",
    "RESERVED_PREFIX",
    "Aggregate",
    "RunningAggregates",
    "WindowSource",
    "node_window_source",
]

DEFAULT_IDLE_TTL_MS = 600_000


@dataclass(slots=True)
class Aggregate:
    """One key's exported values: ``total`` (counters), ``count``/``total`` (distributions),
    ``latest`` (the newest window's value), ``created_ms`` and ``seen_end_ms`` (the end of the
    newest window holding data of the key)."""

    kind: str
    total: float = 0.0
    count: float = 0.0
    latest: object = None
    created_ms: int = 0
    seen_end_ms: int = 0

    def fold(self, value: object, end_ms: int) -> str | None:
        """Add one window's value (windows arrive oldest first); returns why it was refused,
        or None. A Prometheus counter or summary never goes below zero (OpenMetrics 1.0), so a
        counter window with a negative sum, or a distribution window holding a negative value,
        is not folded."""
        self.seen_end_ms = max(self.seen_end_ms, end_ms)
        if self.kind == "counter":
            amount = float(value)  # type: ignore[arg-type]
            if amount < 0:
                return "negative_counter_sum"
            self.total += amount
        elif self.kind == "distribution":
            if float(getattr(value, "minimum", 0.0)) < 0:
                return "negative_distribution_value"
            self.count += float(getattr(value, "count", 0.0))
            self.total += float(getattr(value, "total", 0.0))
        self.latest = value
        return None

    def copy(self) -> Aggregate:
        """An independent copy (provisional windows are folded into copies)."""
        return Aggregate(
            self.kind, self.total, self.count, self.latest, self.created_ms, self.seen_end_ms
        )


@dataclass(frozen=True, slots=True)
class WindowSource:
    """What the exporter reads from a node: window starts with data, one window's values by key,
    a key's kind, whether a window is final, and the window size."""

    starts: Callable[[], list[int]]
    values: Callable[[int], Mapping[str, object]]
    kind_of: Callable[[str], str | None]
    is_final: Callable[[int, int], bool]
    size_ms: int


class RunningAggregates:
    """Per-key running values over final windows (see the module docstring)."""

    def __init__(self, source: WindowSource, idle_ttl_ms: int = DEFAULT_IDLE_TTL_MS) -> None:
        self.source = source
        self.idle_ttl_ms = idle_ttl_ms
        self.aggregates: dict[str, Aggregate] = {}
        self.folded_through_ms: int | None = None
        """The start of the newest window folded; windows at or before it are never read again."""
        self.keys_expired = 0
        self.windows_refused: dict[str, int] = {}
        """Key windows not folded, by reason (see :meth:`Aggregate.fold`)."""

    def _pending_starts(self) -> list[int]:
        size = self.source.size_ms
        through = self.folded_through_ms
        return [
            start
            for start in self.source.starts()
            if start % size == 0 and (through is None or start > through)
        ]

    def fold(self, now_ms: int) -> int:
        """Fold every newly final window, in order, stopping at the first that is not final;
        then drop idle keys. Returns the number of windows folded."""
        folded = 0
        size = self.source.size_ms
        for start in self._pending_starts():
            if not self.source.is_final(start, start + size):
                break
            self._fold_window(self.aggregates, start, copy=False)
            self.folded_through_ms = start
            folded += 1
        self._expire(now_ms)
        return folded

    def _fold_window(self, into: dict[str, Aggregate], start: int, *, copy: bool) -> None:
        end = start + self.source.size_ms
        for key, value in self.source.values(start).items():
            if key.startswith(RESERVED_PREFIX):
                continue
            aggregate = into.get(key)
            if aggregate is None:
                kind = self.source.kind_of(key)
                if kind is None:
                    continue
                aggregate = into[key] = Aggregate(kind, created_ms=start)
            elif copy and aggregate is self.aggregates.get(key):
                aggregate = into[key] = aggregate.copy()
            refused = aggregate.fold(value, end)
            if refused is not None and not copy:
                self.windows_refused[refused] = self.windows_refused.get(refused, 0) + 1

    def _expire(self, now_ms: int) -> None:
        horizon = now_ms - self.idle_ttl_ms
        idle = [key for key, a in self.aggregates.items() if a.seen_end_ms < horizon]
        for key in idle:
            del self.aggregates[key]
        self.keys_expired += len(idle)

    def snapshot(self, *, provisional: bool) -> Mapping[str, Aggregate]:
        """The running values; with ``provisional``, windows not final yet are folded into a
        copy too (their values may still grow)."""
        if not provisional:
            return self.aggregates
        view = dict(self.aggregates)
        for start in self._pending_starts():
            self._fold_window(view, start, copy=True)
        return view

    def finality_lag_ms(self, now_ms: int) -> int | None:
        """How far the newest folded (final) window's end trails ``now_ms``."""
        if self.folded_through_ms is None:
            return None
        return now_ms - (self.folded_through_ms + self.source.size_ms)


def items_sorted(aggregates: Mapping[str, Aggregate]) -> Iterable[tuple[str, Aggregate]]:
    """Aggregates in key order, so expositions list series deterministically."""
    return sorted(aggregates.items())


def node_window_source(node: Node) -> WindowSource:
    """The windows of ``node``'s store, final when gossip says every member has passed them."""
    store = node.engine.store
    return WindowSource(
        starts=store.window_starts,
        values=lambda start: store.read_window(start).values,
        kind_of=store.kind_of,
        is_final=node.engine.gossip.is_final,
        size_ms=store.config.size_ms,
    )
