"""Batch application of accepted events to slices, one function per kind family.

Each function gets the events of one kind that passed validation, kind and lateness checks, as
kind-local key ids and slice positions (``timestamp // slide``), and the store version to stamp.
The work is numpy over the batch; Python loops run over slices, distinct keys or (for the rare
gauge adjustments and exact set items) over those events only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from crdtstream.window.kinds.dense import sum_by_code
from crdtstream.window.kinds.orset import Item
from crdtstream.window.slices import SliceState

__all__ = ["Batch", "apply_batch", "groups_by_slice"]

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]

_CODE_SPACE_MAX = 1 << 40


@dataclass(slots=True)
class Batch:
    """Accepted events of one kind: kind-local keys, slice positions and payloads."""

    keys: Int64Array
    positions: Int64Array
    values: npt.NDArray[np.float64] | npt.NDArray[np.uint64] | Sequence[Item]
    timestamps_ms: Int64Array
    weights: Float64Array | None
    relative: npt.NDArray[np.bool_] | None
    key_count: int
    position_range: tuple[int, int] | None = None
    value_min: float | None = None

    def take(self, rows: Int64Array | npt.NDArray[np.bool_]) -> Batch:
        """The events at ``rows`` (indices, or a mask), in order."""
        values = self.values
        taken: npt.NDArray[np.float64] | npt.NDArray[np.uint64] | Sequence[Item]
        if isinstance(values, np.ndarray):
            taken = values[rows]
        else:
            index = np.flatnonzero(rows) if rows.dtype == np.bool_ else rows
            taken = [values[i] for i in index.tolist()]
        return Batch(
            self.keys[rows],
            self.positions[rows],
            taken,
            self.timestamps_ms[rows],
            None if self.weights is None else self.weights[rows],
            None if self.relative is None else self.relative[rows],
            self.key_count,
        )


@dataclass(slots=True)
class Target:
    """Where a batch lands: slice lookup, replica shape and identity, version to stamp."""

    slice_for: Callable[[int], SliceState]
    replica_count: int
    replica: str
    replica_order: Callable[[], Int64Array]
    version: int
    touched: set[int] = field(default_factory=set)
    changed: list[tuple[int, Int64Array | int | None]] = field(default_factory=list)
    """Per write to a slice: its position and the keys (a superset) whose cells it stamped."""

    def state(self, position: int, keys: Int64Array | int | None) -> SliceState:
        """The slice at ``position``, remembered as touched at ``keys`` (one id, an array that
        is not written to afterwards, or ``None`` for any key)."""
        self.touched.add(position)
        self.changed.append((position, keys))
        return self.slice_for(position)


def groups_by_slice(
    positions: Int64Array, position_range: tuple[int, int] | None = None
) -> Iterator[tuple[int, Int64Array | None]]:
    """``(position, indices)`` per distinct slice position; ``None`` means every event."""
    if len(positions) == 0:
        return
    first, last = position_range or (int(positions.min()), int(positions.max()))
    if first == last:
        yield first, None
        return
    order = np.argsort(positions, kind="stable")
    ordered = positions[order]
    bounds = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    for chunk in np.split(order, bounds):
        yield int(positions[chunk[0]]), chunk


def apply_batch(kind: str, batch: Batch, target: Target) -> None:
    """Apply ``batch`` of ``kind`` to the target slices."""
    if kind == "counter":
        _apply_counter(batch, target)
        return
    for position, index in groups_by_slice(batch.positions, batch.position_range):
        part = batch if index is None else batch.take(index)
        state = target.state(position, _journal_keys(part.keys, batch.key_count, index is None))
        if kind == "gauge":
            _apply_gauge(state, part, target)
        elif kind in ("max", "min"):
            _apply_extreme(kind, state, part, target)
        elif kind == "distinct":
            hashes = np.asarray(part.values, dtype=np.uint64)
            state.registers.add(part.keys, hashes, target.version)
        elif kind == "distribution":
            _apply_distribution(state, part, target)
        else:
            _apply_set(state, part, target)


def _journal_keys(keys: Int64Array, key_count: int, shared: bool) -> Int64Array | None:
    """The keys a part of a batch changes, as the store's journal keeps them: ``None`` (the
    whole slice, which costs no more to look through) when they outnumber the kind's keys, and
    a copy when the array may be the caller's (``shared``)."""
    if len(keys) > key_count:
        return None
    return keys.copy() if shared else keys


def _apply_counter(batch: Batch, target: Target) -> None:
    values = np.asarray(batch.values, dtype=np.float64)
    if len(values) == 0:
        return
    if len(values) == 1:
        position, key = int(batch.positions[0]), int(batch.keys[0])
        _add_counter_event(target, position, key, batch.key_count, float(values[0]))
        return
    first, last = batch.position_range or (int(batch.positions.min()), int(batch.positions.max()))
    span, key_count = last - first + 1, batch.key_count
    if span * key_count > _CODE_SPACE_MAX:
        for _position, index in groups_by_slice(batch.positions):
            part = batch if index is None else batch.take(index)
            _apply_counter(part, target)
        return
    if span == 1:
        codes = batch.keys
    else:
        # The positions array is the store's own scratch (never the caller's), so the codes are
        # built in place: one fewer pass and allocation over the batch.
        codes = batch.positions
        np.subtract(codes, first, out=codes)
        np.multiply(codes, key_count, out=codes)
        np.add(codes, batch.keys, out=codes)
    negative = bool((values.min() if batch.value_min is None else batch.value_min) < 0)
    for column in ("p", "n") if negative else ("p",):
        column_values = np.maximum(values, 0.0) if column == "p" else -np.minimum(values, 0.0)
        cells, sums = sum_by_code(codes, column_values if negative else values, span * key_count)
        if span == 1:
            # One slice (every single write, most batches): the codes are its keys, and
            # splitting them by slice would cost more than the addition itself. Sums of zero
            # touch no slice, as below.
            if len(cells):
                _add_counter_cells(target, first, column, key_count, cells, sums)
            continue
        slice_offsets = cells // key_count
        bounds = np.flatnonzero(slice_offsets[1:] != slice_offsets[:-1]) + 1
        for chunk in np.split(np.arange(len(cells)), bounds):
            if len(chunk) == 0:
                continue
            offset = int(slice_offsets[chunk[0]])
            keys = cells[chunk] - offset * key_count
            _add_counter_cells(target, first + offset, column, key_count, keys, sums[chunk])


def _add_counter_cells(
    target: Target,
    position: int,
    column: str,
    key_count: int,
    keys: Int64Array,
    sums: Float64Array,
) -> None:
    """Add ``sums`` to column ``column`` of this replica's counter cells ``keys`` in the slice
    at ``position`` (distinct keys: a fancy-indexed ``+=`` applies each once)."""
    table = target.state(position, keys).table("counter", target.replica_count, key_count)
    table.columns[column][0, keys] += sums
    table.version[0, keys] = target.version


def _add_counter_event(
    target: Target, position: int, key: int, key_count: int, value: float
) -> None:
    """One event (a single write): the batch's grouping in scalars, which costs a fraction of
    the array passes. A positive value goes to the ``p`` column, a negative one to ``n``; zero
    touches no slice, as a batch's zero sums do not."""
    if value == 0:
        return
    table = target.state(position, key).table("counter", target.replica_count, key_count)
    column = "p" if value > 0 else "n"
    table.columns[column][0, key] += abs(value)
    table.version[0, key] = target.version


def _apply_gauge(state: SliceState, batch: Batch, target: Target) -> None:
    values = np.asarray(batch.values, dtype=np.float64)
    relative = batch.relative
    if relative is None or not relative.any():
        _set_gauges(state, batch.keys, values, batch.timestamps_ms, target)
        return
    # Adjustments depend on the value before them, so the batch is applied in order: runs of
    # absolute sets at once, adjustments one by one.
    bounds = np.flatnonzero(relative[1:] != relative[:-1]) + 1
    for run in np.split(np.arange(len(values)), bounds):
        if relative[run[0]]:
            for index in run:
                _adjust_gauge(state, batch, int(index), target)
        else:
            _set_gauges(state, batch.keys[run], values[run], batch.timestamps_ms[run], target)


def _set_gauges(
    state: SliceState,
    keys: Int64Array,
    values: Float64Array,
    timestamps_ms: Int64Array,
    target: Target,
) -> None:
    winners = _last_writes(keys, timestamps_ms)
    table = state.table("gauge", target.replica_count, int(keys.max()) + 1)
    cells = {
        "timestamp_ms": timestamps_ms[winners],
        "sequence": np.full(len(winners), target.version, dtype=np.int64),
        "value": values[winners],
    }
    table.merge(np.zeros(len(winners), dtype=np.int64), keys[winners], cells, target.version)


def _last_writes(keys: Int64Array, timestamps_ms: Int64Array) -> Int64Array:
    """Per key, the row of its newest write (the later row among equal times)."""
    if len(keys) and int(timestamps_ms.min()) == int(timestamps_ms.max()):
        # One event time (statsd lines without |T): the last row of each key wins, found by a
        # maximum per key (numpy leaves the order of repeated plain assignments open), no sort.
        rows = np.arange(len(keys), dtype=np.int64)
        slot = np.full(int(keys.max()) + 1, -1, dtype=np.int64)
        np.maximum.at(slot, keys, rows)
        last_rows: Int64Array = rows[slot[keys] == rows]
        return last_rows
    order = np.lexsort((np.arange(len(keys)), timestamps_ms, keys))
    ordered_keys = keys[order]
    last = np.ones(len(order), dtype=np.bool_)
    last[:-1] = ordered_keys[1:] != ordered_keys[:-1]
    winners: Int64Array = order[last]
    return winners


def _adjust_gauge(state: SliceState, batch: Batch, index: int, target: Target) -> None:
    """Apply ``+N``/``-N`` to this node's current view and write it as this replica's value.

    The written timestamp is the event's, raised to the winning value's when that is newer; when
    the winner is another replica's write at or after the event time, one millisecond past it,
    so that the adjusted value wins the LWW order everywhere.
    """
    key = int(batch.keys[index])
    table = state.table("gauge", target.replica_count, key + 1)
    present = np.flatnonzero(table.version[:, key] > 0)
    timestamp_ms = int(batch.timestamps_ms[index])
    base = 0.0
    if len(present):
        order = target.replica_order()
        stamps = table.columns["timestamp_ms"][present, key]
        best = present[np.lexsort((order[present], stamps))[-1]]
        base = float(table.columns["value"][best, key])
        winner_ms = int(table.columns["timestamp_ms"][best, key])
        if winner_ms >= timestamp_ms:
            timestamp_ms = winner_ms if best == 0 else winner_ms + 1
    delta = float(np.asarray(batch.values, dtype=np.float64)[index])
    row, keys = np.zeros(1, dtype=np.int64), np.array([key], dtype=np.int64)
    cells = {
        "timestamp_ms": np.array([timestamp_ms], dtype=np.int64),
        "sequence": np.array([target.version], dtype=np.int64),
        "value": np.array([base + delta]),
    }
    table.scatter(row, keys, cells, target.version)


def _apply_extreme(kind: str, state: SliceState, batch: Batch, target: Target) -> None:
    values = np.asarray(batch.values, dtype=np.float64)
    unique, inverse = np.unique(batch.keys, return_inverse=True)
    ufunc = np.maximum if kind == "max" else np.minimum
    reduced = np.full(len(unique), -np.inf if kind == "max" else np.inf)
    ufunc.at(reduced, inverse, values)
    table = state.table(kind, target.replica_count, int(unique.max()) + 1)
    rows = np.zeros(len(unique), dtype=np.int64)
    table.merge(rows, unique, {"value": reduced}, target.version)


def _apply_distribution(state: SliceState, batch: Batch, target: Target) -> None:
    values = np.asarray(batch.values, dtype=np.float64)
    weights = np.ones(len(values)) if batch.weights is None else batch.weights
    state.distributions.add(batch.keys, values, weights, target.replica_count, target.version)


def _apply_set(state: SliceState, batch: Batch, target: Target) -> None:
    items = batch.values
    for index, key in enumerate(batch.keys.tolist()):
        cell = state.set_cell(key)
        cell.add(target.replica, items[index])
        cell.changed_version = target.version
