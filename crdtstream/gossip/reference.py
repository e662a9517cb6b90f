"""A small delta-state lattice of windowed counters: the stand-in for the store in simulations.

:class:`SlotCounters` keeps, per (key, window start, replica), the running total that replica
added (a G-Counter slot, merged by max), and per (window start, replica) how many writes the
replica made to that window (the per-window version vector that finality reads). It satisfies
:class:`crdtstream.gossip.lattice.DeltaLattice` with plain dicts, which keeps a simulated node
cheap enough to run a thousand of them in one process; the windowed store is the production
lattice. Nothing here is on an ingest hot path: writes arrive one at a time from a simulation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from crdtstream import wire

__all__ = ["SlotCounters", "SlotDelta", "decode_slot_delta"]

CellKey = tuple[str, int, str]
WriteKey = tuple[int, str]


@dataclass(slots=True)
class SlotDelta:
    """A delta-group of counter slots and per-window write counters (both merged by max)."""

    cells: dict[CellKey, int] = field(default_factory=dict)
    writes: dict[WriteKey, int] = field(default_factory=dict)

    def is_empty(self) -> bool:
        """True when the group holds no slot and no write counter."""
        return not self.cells and not self.writes

    @property
    def cell_count(self) -> int:
        """Number of entries (slots plus write counters)."""
        return len(self.cells) + len(self.writes)

    def join(self, other: SlotDelta) -> SlotDelta:
        """Pointwise max of both groups, as a new group."""
        cells = dict(self.cells)
        for cell, value in other.cells.items():
            if value > cells.get(cell, 0):
                cells[cell] = value
        writes = dict(self.writes)
        for window, count in other.writes.items():
            if count > writes.get(window, 0):
                writes[window] = count
        return SlotDelta(cells, writes)

    def to_bytes(self) -> bytes:
        """Encode through :mod:`crdtstream.wire` under ``Tag.SLOT_COUNTERS``."""
        cells = [
            [key, start, replica, value] for (key, start, replica), value in self.cells.items()
        ]
        writes = [[start, replica, count] for (start, replica), count in self.writes.items()]
        return wire.encode(wire.Tag.SLOT_COUNTERS, [cells, writes])

    def split(self, max_bytes: int) -> list[SlotDelta]:
        """Parts of at most ``max_bytes`` each; write counters come after all slots, so a part
        never certifies data that travels in a later part."""
        if len(self.to_bytes()) <= max_bytes:
            return [self]
        entries: list[tuple[bool, Any, int]] = [(True, k, v) for k, v in self.cells.items()]
        entries += [(False, k, v) for k, v in self.writes.items()]
        return _halve_until_fits(entries, max_bytes)


def _halve_until_fits(entries: list[tuple[bool, Any, int]], max_bytes: int) -> list[SlotDelta]:
    delta = _from_entries(entries)
    if len(delta.to_bytes()) <= max_bytes:
        return [delta]
    if len(entries) <= 1:
        raise ValueError(f"one entry does not fit in {max_bytes} bytes")
    middle = len(entries) // 2
    return _halve_until_fits(entries[:middle], max_bytes) + _halve_until_fits(
        entries[middle:], max_bytes
    )


def _from_entries(entries: Iterable[tuple[bool, Any, int]]) -> SlotDelta:
    delta = SlotDelta()
    for is_cell, key, value in entries:
        (delta.cells if is_cell else delta.writes)[key] = value
    return delta


def _build(body: Any) -> SlotDelta:
    cells_raw, writes_raw = body
    delta = SlotDelta()
    for key, start, replica, value in cells_raw:
        if not (isinstance(key, str) and isinstance(replica, str)):
            raise TypeError("slot key and replica must be strings")
        delta.cells[(key, int(start), replica)] = int(value)
    for start, replica, count in writes_raw:
        if not isinstance(replica, str):
            raise TypeError("replica must be a string")
        delta.writes[(int(start), replica)] = int(count)
    return delta


def decode_slot_delta(data: bytes) -> SlotDelta:
    """Decode :meth:`SlotDelta.to_bytes` output; raises :class:`~crdtstream.errors.DecodeError`."""
    return wire.decode_as(data, wire.Tag.SLOT_COUNTERS, _build)


class SlotCounters:
    """Windowed counters of one replica, mergeable with every other replica's.

    ``add`` writes only this replica's slots. The watermark follows the store's rule: newest
    time seen minus ``allowed_lateness_ms``; an event for a window ending at or before it is
    late: refused and counted in ``late``.
    """

    def __init__(self, replica: str, window_size_ms: int, allowed_lateness_ms: int) -> None:
        self.replica = replica
        self.window_size_ms = window_size_ms
        self.allowed_lateness_ms = allowed_lateness_ms
        self.late = 0
        self._state = SlotDelta()
        self._changed_at: dict[tuple[bool, Any], int] = {}
        self._version = 0
        self._time_ms: int | None = None

    @property
    def version(self) -> int:
        """Bumped by every local write and every inflating merge."""
        return self._version

    @property
    def watermark_ms(self) -> int | None:
        """Newest time seen (events and clock) minus the allowed lateness; None before any."""
        if self._time_ms is None:
            return None
        return self._time_ms - self.allowed_lateness_ms

    def advance(self, now_ms: int) -> None:
        """Move time with the clock, so idle windows close too."""
        self._time_ms = now_ms if self._time_ms is None else max(self._time_ms, now_ms)

    def window_start(self, timestamp_ms: int) -> int:
        """The start of the tumbling window holding ``timestamp_ms``."""
        return timestamp_ms - timestamp_ms % self.window_size_ms

    def add(self, key: str, timestamp_ms: int, amount: int) -> bool:
        """Add ``amount`` (>= 0) to ``key`` in its window; False (and counted) when late."""
        if amount < 0:
            raise ValueError(f"a slot counter only grows: amount={amount}")
        start = self.window_start(timestamp_ms)
        watermark_ms = self.watermark_ms
        if watermark_ms is not None and start + self.window_size_ms <= watermark_ms:
            self.late += 1
            return False
        self.advance(timestamp_ms)
        if amount == 0:
            return True  # nothing to replicate: a zero slot would never inflate a peer
        self._version += 1
        cell = (key, start, self.replica)
        self._state.cells[cell] = self._state.cells.get(cell, 0) + amount
        self._changed_at[(True, cell)] = self._version
        write = (start, self.replica)
        self._state.writes[write] = self._state.writes.get(write, 0) + 1
        self._changed_at[(False, write)] = self._version
        return True

    def delta_since(self, version: int) -> SlotDelta:
        """Every slot and write counter changed after ``version``."""
        changed = [entry for entry, at in self._changed_at.items() if at > version]
        return self._pick(changed)

    def full_state(self) -> SlotDelta:
        """A copy of the whole state."""
        return SlotDelta(dict(self._state.cells), dict(self._state.writes))

    def merge(self, delta: SlotDelta) -> SlotDelta:
        """Join ``delta``; return the entries of it that raised a local value."""
        inflating = SlotDelta()
        for cell, value in delta.cells.items():
            if value > self._state.cells.get(cell, 0):
                inflating.cells[cell] = value
        for window, count in delta.writes.items():
            if count > self._state.writes.get(window, 0):
                inflating.writes[window] = count
        if inflating.is_empty():
            return inflating
        self._version += 1
        self._state.cells.update(inflating.cells)
        self._state.writes.update(inflating.writes)
        for cell in inflating.cells:
            self._changed_at[(True, cell)] = self._version
        for window in inflating.writes:
            self._changed_at[(False, window)] = self._version
        return inflating

    def window_versions(self, start_ms: int) -> dict[str, int]:
        """Per replica, the writes to the window starting at ``start_ms`` merged here."""
        return {
            replica: count
            for (start, replica), count in self._state.writes.items()
            if start == start_ms
        }

    def window_starts(self) -> list[int]:
        """Every window start that holds a write, oldest first."""
        return sorted({start for start, _ in self._state.writes})

    def totals(self) -> dict[tuple[str, int], int]:
        """The value of every (key, window start): the sum of all replicas' slots."""
        result: dict[tuple[str, int], int] = {}
        for (key, start, _replica), value in self._state.cells.items():
            result[(key, start)] = result.get((key, start), 0) + value
        return result

    def slot(self, key: str, start_ms: int, replica: str) -> int:
        """One replica's running total for ``key`` in a window (0 when never written)."""
        return self._state.cells.get((key, start_ms, replica), 0)

    def _pick(self, entries: Iterable[tuple[bool, Any]]) -> SlotDelta:
        delta = SlotDelta()
        for is_cell, key in entries:
            if is_cell:
                delta.cells[key] = self._state.cells[key]
            else:
                delta.writes[key] = self._state.writes[key]
        return delta
