"""Watching keys change: one change feed per node, coalesced, resumable, never silently gapped.

Rules of this file: pure (no clock, event loop or thread). The driver calls
:meth:`ChangeFeed.poll` once per coalescing interval with its clock reading; the feed compares
each key's state with what it reported last and hands the differences to its subscribers'
bounded buffers. How a waiting reader wakes up is the driver's business (``notify``).

The semantics, after etcd's watch:

- **Events.** A :class:`Change` says that one window of one key now holds ``value``
  (``final``: it will never change again). A :class:`Reset` replaces everything a subscriber
  knew with a fresh ``snapshot`` (the latest change of every matching window). A
  :class:`Progress` bookmark says the subscriber has seen everything up to ``sequence``.
- **Versions.** Every change gets the next number of this node's ``sequence``. A CRDT key's
  ``version`` is that sequence; a strong key's ``version`` is the Raft index this node had
  applied when the change was seen. Resuming (``since=``) always takes a ``sequence``.
- **Order.** Per key and window, changes arrive in the order the node saw them, each once, with
  increasing ``sequence`` and ``version``. Streams of different nodes are not mutually ordered:
  each node numbers its own sequence, and the same write reaches nodes at different times.
- **Coalescing.** State is compared once per interval, not per event: a counter written a
  thousand times in one interval is reported once, with its value at the end of the interval.
  A window that changed and changed back within one interval is not reported.
- **No silent gaps.** A subscriber whose buffer would overflow loses its buffered changes and
  gets one :class:`Reset` instead, with the current state: it can fall behind, never skip a
  change unknowingly.
- **Resume.** ``since=S`` (a ``sequence`` seen before, from a change, reset or bookmark) delivers
  exactly the changes after ``S``, while this node's history (``history_changes_max``) still
  holds them; otherwise a :class:`Reset`. ``since=0`` therefore gives the whole state. A
  sequence is meaningful on the node that issued it during its lifetime only: a restarted node
  numbers afresh, so a client that reconnects to a restarted node gets a reset.
- **Not reported.** Windows leaving retention disappear silently (they were final long before);
  a strong key is watched only on a Raft voter (other nodes hold no copy of it).
"""

from __future__ import annotations

import fnmatch
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from crdtstream.config import Mode
from crdtstream.window.results import WindowValue

__all__ = [
    "Change",
    "ChangeFeed",
    "Progress",
    "Reset",
    "Subscriber",
    "WatchEvent",
    "WatchSource",
]

Window = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Change:
    """One window of one key changed: ``window`` is ``(start_ms, end_ms)``."""

    key: str
    window: Window
    value: object
    version: int
    mode: Mode
    final: bool
    sequence: int

    def as_dict(self) -> dict[str, object]:
        """The change as plain data (``window`` as a two-item list)."""
        return {
            "key": self.key,
            "window": list(self.window),
            "value": self.value,
            "version": self.version,
            "mode": self.mode,
            "final": self.final,
            "sequence": self.sequence,
        }


@dataclass(frozen=True, slots=True)
class Reset:
    """Forget what you knew: ``snapshot`` is the current state of every matching window, as of
    ``sequence``; later changes follow it."""

    sequence: int
    snapshot: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class Progress:
    """A bookmark: every change up to ``sequence`` has been delivered (``raft_index`` is the
    Raft index this node had applied then, 0 without Raft)."""

    sequence: int
    raft_index: int


WatchEvent = Change | Reset | Progress


class WatchSource(Protocol):
    """What a feed reads from a node (:class:`crdtstream.replica.EngineSource` reads an engine).

    CRDT state is read a window at a time (every key's value in one call), strong keys a key
    at a time (few, and only when the Raft log moved).
    """

    def crdt_version(self) -> int:
        """The store's version: it moves whenever any CRDT state changes."""
        ...

    def crdt_changes_since(self, version: int) -> dict[Window, set[str]]:
        """Per window, the CRDT keys whose state in it changed after ``version``."""
        ...

    def crdt_windows(self) -> list[Window]:
        """Every retained window that holds data."""
        ...

    def crdt_window(self, window: Window) -> dict[str, object]:
        """Every key's value in ``window``."""
        ...

    def retention_floor_ms(self) -> int | None:
        """Windows starting before this are gone from the store."""
        ...

    def is_final(self, start_ms: int, end_ms: int) -> bool:
        """Whether a CRDT window is final on this node."""
        ...

    def mode_of(self, key: str) -> Mode:
        """The key's mode under the policy."""
        ...

    def raft_applied(self) -> int:
        """The Raft index applied here (0 without Raft)."""
        ...

    def strong_keys(self) -> Iterable[str]:
        """The strong keys this node holds a copy of."""
        ...

    def strong_windows(self, key: str) -> tuple[WindowValue, ...] | None:
        """A strong key's retained windows here, None when this node holds no copy."""
        ...


class Subscriber:
    """One watch: a glob ``pattern`` and a bounded buffer of events the feed fills."""

    def __init__(self, pattern: str, buffer_events_max: int, notify: Callable[[], None]) -> None:
        self.pattern = pattern
        self.buffer_events_max = buffer_events_max
        self.buffer: deque[WatchEvent] = deque()
        self.notify = notify
        self.closed = False
        self.resets = 0
        """How many times this subscriber fell behind and was reset."""

    def matches(self, key: str) -> bool:
        """Whether ``key`` is watched here."""
        return fnmatch.fnmatchcase(key, self.pattern)

    def pop(self) -> WatchEvent | None:
        """The oldest buffered event, None when there is none."""
        return self.buffer.popleft() if self.buffer else None


class ChangeFeed:
    """This node's changes, detected batch-wise per interval (see the module docstring)."""

    def __init__(
        self,
        source: WatchSource,
        *,
        history_changes_max: int = 10_000,
        buffer_events_max: int = 1_000,
        progress_interval_ms: int = 10_000,
    ) -> None:
        if history_changes_max < 1 or buffer_events_max < 1 or progress_interval_ms < 1:
            raise ValueError(
                "history_changes_max, buffer_events_max and progress_interval_ms must be >= 1"
            )
        self.source = source
        self.history_changes_max = history_changes_max
        self.buffer_events_max = buffer_events_max
        self.progress_interval_ms = progress_interval_ms
        self.sequence = 0
        self.raft_index = source.raft_applied()
        self._crdt_version = source.crdt_version()
        # The latest change of every window, per key: what a reset's snapshot is made of.
        self._latest: dict[str, dict[Window, Change]] = {}
        # CRDT windows not final yet, with their keys: re-read once the window goes final.
        self._open: dict[Window, set[str]] = {}
        # CRDT windows reported, with their keys: forgotten when they leave retention.
        self._window_keys: dict[Window, set[str]] = {}
        self._history: deque[Change] = deque()
        # Sequences up to this one are not all in the history (forgotten, or before the start).
        self._history_floor = 0
        self._subscribers: list[Subscriber] = []
        self._next_progress_ms: int | None = None
        self._prime()

    # ------------------------------------------------------------------ subscribing

    def subscribe(
        self,
        pattern: str,
        notify: Callable[[], None],
        *,
        since: int | None = None,
        buffer_events_max: int | None = None,
    ) -> Subscriber:
        """Watch keys matching the glob ``pattern`` from now on, or after sequence ``since``."""
        if since is not None and (type(since) is not int or since < 0):
            raise ValueError(f"since must be a sequence >= 0, got {since!r}")
        limit = self.buffer_events_max if buffer_events_max is None else buffer_events_max
        if limit < 1:
            raise ValueError(f"buffer_events_max must be >= 1, got {limit}")
        subscriber = Subscriber(pattern, limit, notify)
        self._subscribers.append(subscriber)
        if since is not None:
            if self._history_floor <= since <= self.sequence:
                missed = [c for c in self._history if c.sequence > since]
                self._offer(subscriber, [c for c in missed if subscriber.matches(c.key)])
            else:
                self._reset(subscriber)
        if subscriber.buffer:
            notify()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop filling ``subscriber``'s buffer and wake its reader."""
        subscriber.closed = True
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
        subscriber.notify()

    def close(self) -> None:
        """End every subscription (their readers see the end of the stream)."""
        for subscriber in list(self._subscribers):
            self.unsubscribe(subscriber)

    @property
    def subscribers(self) -> int:
        """How many watches are open."""
        return len(self._subscribers)

    def snapshot(self, pattern: str) -> tuple[Change, ...]:
        """The latest change of every retained window of the keys matching ``pattern``."""
        return tuple(
            change
            for key in sorted(self._latest)
            if fnmatch.fnmatchcase(key, pattern)
            for change in self._latest[key].values()
        )

    # ------------------------------------------------------------------ detecting

    def poll(self, now_ms: int) -> list[Change]:
        """Compare state with what was reported, once: report the differences to subscribers
        (and a progress bookmark when due). Returns the new changes."""
        changes = self._detect()
        if changes:
            self._remember(changes)
            for subscriber in self._subscribers:
                matching = [c for c in changes if subscriber.matches(c.key)]
                if matching and self._offer(subscriber, matching):
                    subscriber.notify()
        if self._next_progress_ms is None:
            self._next_progress_ms = now_ms + self.progress_interval_ms
        elif now_ms >= self._next_progress_ms:
            self._next_progress_ms = now_ms + self.progress_interval_ms
            self._bookmark()
        return changes

    def _detect(self) -> list[Change]:
        """This pass's changes: CRDT windows changed in the store or gone final, read a window
        at a time; every strong key when Raft applied anything."""
        source = self.source
        changes: list[Change] = []
        windows: dict[Window, set[str]] = {}
        version = source.crdt_version()
        if version != self._crdt_version:
            windows = source.crdt_changes_since(self._crdt_version)
            self._crdt_version = version
        # One finality verdict per open window, not per key.
        for window in [w for w in self._open if source.is_final(*w)]:
            windows.setdefault(window, set()).update(self._open.pop(window))
        floor = source.retention_floor_ms()
        for window in sorted(windows):
            if floor is None or window[0] >= floor:
                changes.extend(self._diff_window(window, windows[window]))
        if floor is not None:
            self._forget_before(floor)
        applied = source.raft_applied()
        if applied != self.raft_index:
            self.raft_index = applied
            for key in sorted(source.strong_keys()):
                changes.extend(self._diff_strong(key))
        return changes

    def _diff_window(self, window: Window, keys: Iterable[str] | None) -> list[Change]:
        """Compare ``keys`` (None: every key) in one CRDT window with what was reported."""
        source = self.source
        values = source.crdt_window(window)
        final = source.is_final(*window)
        changes: list[Change] = []
        for key in sorted(values if keys is None else keys):
            if key not in values:
                continue
            change = self._compare(key, window, values[key], source.mode_of(key), final)
            if change is not None:
                changes.append(change)
                self._window_keys.setdefault(window, set()).add(key)
                if not final:
                    self._open.setdefault(window, set()).add(key)
        return changes

    def _diff_strong(self, key: str) -> list[Change]:
        windows = self.source.strong_windows(key)
        if windows is None:
            return []
        changes: list[Change] = []
        retained: set[Window] = set()
        for value in windows:
            window = (value.start_ms, value.end_ms)
            retained.add(window)
            change = self._compare(key, window, value.value, "strong", value.final)
            if change is not None:
                changes.append(change)
        latest = self._latest.get(key, {})
        for window in [w for w in latest if w not in retained]:
            del latest[window]  # left the replicated retention: not reported
        return changes

    def _compare(
        self, key: str, window: Window, value: object, mode: Mode, final: bool
    ) -> Change | None:
        """The change of ``key`` in ``window``, None when it holds what was reported."""
        latest = self._latest.setdefault(key, {})
        before = latest.get(window)
        if before is not None and before.final == final and _same(before.value, value):
            return None
        self.sequence += 1
        version = self.raft_index if mode == "strong" else self.sequence
        change = Change(key, window, value, version, mode, final, self.sequence)
        latest[window] = change
        return change

    def _forget_before(self, floor_ms: int) -> None:
        """Drop CRDT windows that left retention (not reported: they were final long ago)."""
        for window in [w for w in self._window_keys if w[0] < floor_ms]:
            for key in self._window_keys.pop(window):
                latest = self._latest.get(key)
                if latest is not None:
                    latest.pop(window, None)
                    if not latest:
                        del self._latest[key]
            self._open.pop(window, None)

    def _prime(self) -> None:
        """Take the state at the start as known: a watch from now reports only what changes."""
        for window in self.source.crdt_windows():
            self._diff_window(window, None)
        for key in self.source.strong_keys():
            self._diff_strong(key)
        self._history_floor = self.sequence

    def _remember(self, changes: list[Change]) -> None:
        self._history.extend(changes)
        while len(self._history) > self.history_changes_max:
            self._history_floor = self._history.popleft().sequence

    # ------------------------------------------------------------------ delivering

    def _offer(self, subscriber: Subscriber, changes: list[Change]) -> bool:
        """Buffer ``changes``, or reset the subscriber when they do not fit; True when the
        buffer holds something new."""
        if not changes:
            return False
        if len(subscriber.buffer) + len(changes) > subscriber.buffer_events_max:
            self._reset(subscriber)
        else:
            subscriber.buffer.extend(changes)
        return True

    def _reset(self, subscriber: Subscriber) -> None:
        """Replace what ``subscriber`` has not read yet by the current state: a reader that fell
        behind learns it did, and continues from a consistent point."""
        subscriber.buffer.clear()
        subscriber.buffer.append(Reset(self.sequence, self.snapshot(subscriber.pattern)))
        subscriber.resets += 1

    def _bookmark(self) -> None:
        mark = Progress(self.sequence, self.raft_index)
        for subscriber in self._subscribers:
            # A full buffer will be reset anyway; a bookmark must never be what overflows it.
            if len(subscriber.buffer) < subscriber.buffer_events_max:
                subscriber.buffer.append(mark)
                subscriber.notify()


def _same(before: object, after: object) -> bool:
    """Whether two window values are equal (sketches compare by their summary: their state
    holds arrays, which have no single truth value)."""
    if hasattr(after, "quantile"):
        return _summary(before) == _summary(after)
    try:
        return bool(before == after)
    except ValueError:  # an array-valued comparison
        return False


def _summary(value: object) -> tuple[object, ...]:
    names = ("count", "total", "minimum", "maximum")
    return tuple(getattr(value, name, None) for name in names)
