"""The windowed keyed store: events in, windowed CRDT state out, deltas ready for gossip.

Rules of this file: pure. Time arrives as event timestamps and :meth:`WindowStore.advance`
arguments; nothing here reads a clock or touches a file (see :mod:`.snapshot` for the one helper
that writes snapshot files, called by the driver).

Keys are interned to dense ids per kind; state is columnar per (slice, kind), so a batch of N
events is O(N) numpy work. Every change bumps :attr:`WindowStore.version`, stamps the changed
``(key, slice, replica)`` cells and notes the slice and keys in a bounded
:class:`~crdtstream.window.journal.ChangeJournal`; :meth:`WindowStore.delta_since` reads the
stamps of only the cells the journal names, so a small change makes a cheap delta. This
replica writes only its own slots; :meth:`WindowStore.merge` joins other replicas' cells and
returns the part that was new. Per-slice version vectors count each replica's writes, so a
caller can tell when every member's contributions to a window have arrived (finality).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from crdtstream.config import WindowConfig
from crdtstream.crdt.hashing import hash64
from crdtstream.crdt.mapping import LogMapping
from crdtstream.errors import KindConflictError
from crdtstream.window import reads, sync
from crdtstream.window.apply import Batch, Target, apply_batch
from crdtstream.window.cells import KINDS
from crdtstream.window.delta import StoreDelta
from crdtstream.window.journal import ChangeJournal
from crdtstream.window.keys import KeyRegistry
from crdtstream.window.kinds.orset import Item
from crdtstream.window.results import IngestResult, WindowRead, WindowValue
from crdtstream.window.screen import and_masks, is_identity, screen
from crdtstream.window.slices import SliceState
from crdtstream.window.watermark import Watermark
from crdtstream.window.windows import Windows

__all__ = ["WindowStore"]

Int64Array = npt.NDArray[np.int64]


class EventBatch(Protocol):
    """A columnar batch of one kind, as the statsd parser emits it (see :meth:`ingest`)."""

    @property
    def key_names(self) -> Sequence[str]: ...
    @property
    def key_index(self) -> npt.NDArray[np.int64]: ...
    @property
    def values(self) -> npt.NDArray[Any]: ...
    @property
    def timestamps_ms(self) -> npt.NDArray[np.int64]: ...
    @property
    def weights(self) -> npt.NDArray[np.float64] | None: ...
    @property
    def relative(self) -> npt.NDArray[np.bool_] | None: ...
    @property
    def key_ids(self) -> npt.NDArray[np.int64] | None: ...
    @property
    def key_space(self) -> object | None: ...


class WindowStore:
    """Windowed, keyed CRDT state of one replica (see the module docstring)."""

    def __init__(self, replica: str, window: WindowConfig | None = None) -> None:
        self.replica = replica
        self.config = window if window is not None else WindowConfig()
        self.windows = Windows.from_config(self.config)
        self.watermark = Watermark(self.config.allowed_lateness_ms)
        self.mapping = LogMapping(self.config.distribution_relative_accuracy)
        self.version = 0
        self.slices: dict[int, SliceState] = {}
        self.keys = KeyRegistry()
        self.kind_keys: dict[str, list[str]] = self.keys.names
        self.replicas: list[str] = [replica]
        self.replica_rows: dict[str, int] = {replica: 0}
        # (slice start, replica row) -> [writes counted, store version of the last change]
        self.window_counts: dict[tuple[int, int], list[int]] = {}
        self.journal = ChangeJournal()
        self.late_total = 0
        self.late_by_key: dict[str, int] = {}
        self.rejected_total = 0
        self.invalid_total = 0
        self.merge_rejected_cells = 0
        self._intern_cache: tuple[str, list[str], Int64Array, list[str]] | None = None
        # Per kind: a caller's key numbering (its token) and the local id of each of its ids.
        self._key_spaces: dict[str, tuple[object, Int64Array]] = {}

    # ------------------------------------------------------------------ identities

    def intern_keys(self, kind: str, names: Sequence[str]) -> tuple[Int64Array, list[str]]:
        """Kind-local ids of ``names`` (-1 for a key that has another kind) and those keys."""
        cached = self._intern_cache
        # Parsers hand the same key list batch after batch; a list comparison (C speed) is far
        # cheaper than a dict lookup per name.
        if (
            cached is not None
            and cached[0] == kind
            and isinstance(names, list)
            and cached[1] == names
        ):
            return cached[2], cached[3]
        ids, conflicts = self.keys.ids(kind, names)
        self._intern_cache = (kind, list(names), ids, conflicts)
        return ids, conflicts

    def intern_key_ids(
        self, kind: str, names: Sequence[str], key_ids: Int64Array, key_space: object
    ) -> tuple[Int64Array, list[str]]:
        """As :meth:`intern_keys`, for names a caller also numbers lastingly (``key_ids`` in the
        numbering ``key_space``): ids seen before are mapped by one array lookup, and only the
        others are looked up by name. One numbering is remembered per kind."""
        if len(key_ids) != len(names) or (len(key_ids) and int(key_ids.min()) < 0):
            raise ValueError("key_ids must number key_names one to one, from 0 up")
        space = self._key_spaces.get(kind)
        if space is None or space[0] is not key_space:
            space = (key_space, np.zeros(0, dtype=np.int64))
        table = space[1]
        needed = int(key_ids.max()) + 1 if len(key_ids) else 0
        if needed > len(table):
            grown = np.full(max(needed, 2 * len(table)), -1, dtype=np.int64)
            grown[: len(table)] = table
            table = grown
        self._key_spaces[kind] = (key_space, table)
        ids = table[key_ids]
        unknown = np.flatnonzero(ids < 0)
        conflicts: list[str] = []
        if len(unknown):
            # Keys of another kind stay unknown and are looked up (and rejected) every time.
            lookup = names if len(unknown) == len(names) else _pick(names, unknown)
            found, conflicts = self.intern_keys(kind, lookup)
            ids[unknown] = found
            table[key_ids[unknown]] = found
        return ids, conflicts

    def kind_of(self, key: str) -> str | None:
        """The kind of ``key``, None when the store has never seen it."""
        entry = self.keys.kind_of(key)
        return None if entry is None else entry[0]

    def replica_row(self, replica: str) -> int:
        """The dense row of ``replica`` (added on first sight)."""
        row = self.replica_rows.get(replica)
        if row is None:
            row = self.replica_rows[replica] = len(self.replicas)
            self.replicas.append(replica)
        return row

    def replica_order(self) -> Int64Array:
        """Each replica row's rank in the order of replica names (the LWW tie-break)."""
        ranks = np.empty(len(self.replicas), dtype=np.int64)
        ranks[np.argsort(np.asarray(self.replicas, dtype=object))] = np.arange(len(self.replicas))
        return ranks

    def slice_for(self, position: int) -> SliceState:
        """The state of the slice at ``position`` (``start // slide``), created when new."""
        start = position * self.windows.slide_ms
        state = self.slices.get(start)
        if state is None:
            state = self.slices[start] = SliceState(self.config.distinct_precision, self.mapping)
        return state

    # ------------------------------------------------------------------ time

    @property
    def watermark_ms(self) -> int | None:
        """Newest time seen minus the allowed lateness; None before any event or advance."""
        return self.watermark.watermark_ms

    def retention_floor_ms(self) -> int | None:
        """Slices starting before this are evicted (None before any time was seen)."""
        time_ms = self.watermark.time_ms
        if time_ms is None:
            return None
        newest = self.windows.slice_start(time_ms)
        return newest - (self.config.retention_windows - 1) * self.windows.slide_ms

    def first_open_position(self) -> int | None:
        """Slices at smaller positions are closed or evicted: events for them are late."""
        watermark, floor = self.watermark.watermark_ms, self.retention_floor_ms()
        if watermark is None or floor is None:
            return None
        slide = self.windows.slide_ms
        return max(watermark // slide, floor // slide)

    def advance(self, now_ms: int) -> tuple[int, ...]:
        """Advance time by the clock (idle streams close); return evicted slice starts."""
        self.watermark.advance(now_ms)
        return self._evict()

    def _evict(self) -> tuple[int, ...]:
        floor = self.retention_floor_ms()
        if floor is None:
            return ()
        evicted = tuple(sorted(start for start in self.slices if start < floor))
        for start in evicted:
            del self.slices[start]
        for entry in [entry for entry in self.window_counts if entry[0] < floor]:
            del self.window_counts[entry]
        return evicted

    # ------------------------------------------------------------------ writes

    def ingest_batch(self, kind: str, batch: EventBatch) -> IngestResult:
        """:meth:`ingest` of a columnar batch, such as one kind of a parsed statsd datagram."""
        return self.ingest(
            kind,
            batch.key_names,
            batch.key_index,
            batch.values,
            batch.timestamps_ms,
            weights=batch.weights,
            relative=batch.relative,
            key_ids=batch.key_ids,
            key_space=batch.key_space,
        )

    def ingest(
        self,
        kind: str,
        key_names: Sequence[str],
        key_index: npt.ArrayLike,
        values: npt.ArrayLike | Sequence[Item],
        timestamps_ms: npt.ArrayLike,
        *,
        weights: npt.ArrayLike | None = None,
        relative: npt.ArrayLike | None = None,
        key_ids: npt.ArrayLike | None = None,
        key_space: object | None = None,
    ) -> IngestResult:
        """Apply a batch of events of one ``kind``; never raises for bad events, only counts.

        ``key_names`` are the batch's distinct keys and ``key_index`` (int64, N) points into it.
        ``values`` are float64 (counter, gauge, distribution, max, min), uint64 hashes from
        :func:`~crdtstream.crdt.hashing.hash64_many` (distinct) or str/bytes items (set).
        ``weights`` are distribution counts (statsd ``1/rate``); ``relative`` marks gauge
        ``+N``/``-N`` adjustments. Mismatched array lengths raise :class:`ValueError`.
        ``key_ids`` and ``key_space`` (optional, together) are the caller's lasting ids of
        ``key_names`` and a token of their numbering (a statsd ``KindBatch`` carries both): with
        them, keys seen before skip the lookup by name (see :meth:`intern_key_ids`).

        Lateness is judged against the watermark as it stood when the batch arrived; the batch's
        newest event time then moves it (so events within one batch never make each other late).
        """
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
        events = screen(
            kind, len(key_names), key_index, values, timestamps_ms, weights, relative, self.windows
        )
        if key_ids is None or key_space is None:
            name_ids, conflicts = self.intern_keys(kind, key_names)
        else:
            lasting = np.asarray(key_ids, dtype=np.int64)
            name_ids, conflicts = self.intern_key_ids(kind, key_names, lasting, key_space)
        keys = events.index if is_identity(name_ids) else name_ids[events.index]
        usable = and_masks(events.valid, keys >= 0 if conflicts else None)
        late = self._late_mask(events.positions, events.position_range[0], usable)
        accepted = and_masks(usable, None if late is None else ~late)
        late_by_key = self._count_late(key_names, events.index, late)
        count = len(keys)
        accepted_count = count if accepted is None else int(np.count_nonzero(accepted))
        if accepted_count:
            self._apply(kind, events.batch(keys, accepted))
        if count and (usable is None or usable.any()):
            stamps = events.timestamps_ms
            newest = events.stamp_range[1] if usable is None else int(stamps[usable].max())
            self.watermark.advance(newest)
        valid_count = count if events.valid is None else int(np.count_nonzero(events.valid))
        rejected = valid_count - (count if usable is None else int(np.count_nonzero(usable)))
        self.rejected_total += rejected
        self.invalid_total += count - valid_count
        return IngestResult(
            accepted=accepted_count,
            late=sum(late_by_key.values()),
            late_by_key=late_by_key,
            rejected=rejected,
            rejected_keys=tuple(conflicts),
            invalid=count - valid_count,
            evicted_windows_ms=self._evict(),
        )

    def _apply(self, kind: str, batch: Batch) -> None:
        self.version += 1
        batch.key_count = len(self.kind_keys[kind])
        target = self._target()
        apply_batch(kind, batch, target)
        for position in target.touched:
            self.slice_for(position).note_change(kind, target.version)
        record, version, slide = self.journal.record, target.version, self.windows.slide_ms
        for position, keys in target.changed:
            record(version, kind, position * slide, keys)
        self._count_writes(target.touched)

    def add(
        self,
        key: str,
        kind: str,
        value: float | str | bytes | int,
        timestamp_ms: int,
        *,
        weight: float = 1.0,
        relative: bool = False,
    ) -> IngestResult:
        """One event; ``distinct`` items (str, bytes or int) are hashed here."""
        item: object = value
        if kind == "distinct":
            item = np.array([hash64(value)], dtype=np.uint64)  # type: ignore[arg-type]
        elif kind == "set":
            item = [value]
        else:
            item = np.array([value], dtype=np.float64)
        return self.ingest(
            kind,
            [key],
            np.zeros(1, dtype=np.int64),
            item,
            np.array([timestamp_ms], dtype=np.int64),
            weights=np.array([weight]) if kind == "distribution" else None,
            relative=np.array([relative]) if kind == "gauge" else None,
        )

    def remove(self, key: str, item: Item, timestamp_ms: int) -> bool:
        """Remove ``item`` from set ``key`` in the slice of ``timestamp_ms``; True when present.

        A remove on a key of another kind raises :class:`KindConflictError`; one for a closed or
        evicted slice is late and does nothing (False).
        """
        ids, conflicts = self.intern_keys("set", [key])
        if conflicts:
            raise KindConflictError(f"key {key!r} has kind {self.kind_of(key)!r}, not 'set'")
        position = self.windows.slice_start(timestamp_ms) // self.windows.slide_ms
        first_open = self.first_open_position()
        if first_open is not None and position < first_open:
            self.late_total += 1
            self.late_by_key[key] = self.late_by_key.get(key, 0) + 1
            return False
        # Looked up, not created: a removal never makes an empty slice appear.
        state = self.slices.get(position * self.windows.slide_ms)
        cell = None if state is None else state.sets.get(int(ids[0]))
        if state is None or cell is None or not cell.remove(item):
            return False
        self.version += 1
        cell.changed_version = self.version
        state.note_change("set", self.version)
        self.journal.record(self.version, "set", position * self.windows.slide_ms, int(ids[0]))
        self._count_writes({position})
        return True

    def _target(self) -> Target:
        return Target(
            self.slice_for, len(self.replicas), self.replica, self.replica_order, self.version
        )

    def _late_mask(
        self, positions: Int64Array, first_position: int, usable: npt.NDArray[np.bool_] | None
    ) -> npt.NDArray[np.bool_] | None:
        first_open = self.first_open_position()
        if first_open is None or len(positions) == 0 or first_position >= first_open:
            return None
        late = positions < first_open
        return late if usable is None else late & usable

    def _count_late(
        self,
        key_names: Sequence[str],
        index: Int64Array,
        late: npt.NDArray[np.bool_] | None,
    ) -> dict[str, int]:
        if late is None or not late.any():
            return {}
        counts = np.bincount(index[late], minlength=len(key_names))
        result = {key_names[i]: int(counts[i]) for i in np.flatnonzero(counts).tolist()}
        for name, count in result.items():
            self.late_by_key[name] = self.late_by_key.get(name, 0) + count
        self.late_total += sum(result.values())
        return result

    def _count_writes(self, positions: set[int]) -> None:
        """Count one write of this replica to each slice a change touched.

        A write is one ingest call (or remove) per slice rather than one event: the count only
        has to grow with every change, and this way costs nothing per event.
        """
        for position in positions:
            entry = self.window_counts.setdefault((position * self.windows.slide_ms, 0), [0, 0])
            entry[0] += 1
            entry[1] = self.version

    # ------------------------------------------------------------------ gossip

    def delta_since(self, version: int) -> StoreDelta:
        """Cells and window versions changed after ``version`` (a delta-group)."""
        return sync.delta_since(self, version)

    def full_state(self) -> StoreDelta:
        """Everything retained, as one delta (by the walk over every slice, whose order of
        cells and entries snapshots have always had)."""
        return sync.walk_delta_since(self, 0)

    def key_state(self, key: str) -> StoreDelta:
        """Everything retained of ``key``, as one delta (empty for an unknown key); what a
        quorum read asks each member for."""
        return sync.key_state(self, key)

    def merge(self, delta: StoreDelta) -> StoreDelta:
        """Join ``delta`` in place; return the part of it that inflated this state.

        Cells of evicted slices are ignored; cells of a key that has another kind here are
        counted in :attr:`merge_rejected_cells` and skipped. Mismatched store parameters raise
        :class:`~crdtstream.errors.MergeError` before anything is applied.
        """
        return sync.merge(self, delta)

    def window_versions(self, start_ms: int) -> dict[str, int]:
        """Per replica, how many writes it made to the window starting at ``start_ms``.

        Counts are kept per slice and merged by maximum; a hopping window sums its slices'
        counts, which two stores agree on exactly when they agree on every slice.
        """
        slices = set(self.windows.slices_of_window(start_ms))
        counts: dict[str, int] = {}
        for (start, row), entry in self.window_counts.items():
            if start in slices:
                replica = self.replicas[row]
                counts[replica] = counts.get(replica, 0) + entry[0]
        return counts

    # ------------------------------------------------------------------ reads

    def read_key(self, key: str, *, final_through_ms: int | None = None) -> list[WindowValue]:
        """Every retained window holding data of ``key``, oldest first.

        ``final`` is true for windows ending at or before ``final_through_ms``: finality across
        nodes is decided by the caller (gossip), which knows the members' watermarks.
        """
        return reads.read_key(self, key, final_through_ms)

    def read_window(self, start_ms: int, *, final_through_ms: int | None = None) -> WindowRead:
        """Every key's value in the window starting at ``start_ms``."""
        return reads.read_window(self, start_ms, final_through_ms)

    def window_starts(self) -> list[int]:
        """Starts of the retained windows that hold any data, oldest first."""
        return reads.window_starts(self)

    def state_bytes(self) -> int:
        """Approximate bytes of state held in slices."""
        return sum(state.nbytes() for state in self.slices.values())


def _pick(names: Sequence[str], rows: Int64Array) -> Sequence[str]:
    """``names[row]`` for each row (at least one), gathered at C speed."""
    if len(rows) == 1:
        return [names[int(rows[0])]]
    picked: tuple[str, ...] = itemgetter(*rows.tolist())(names)
    return picked
