"""Reads of :class:`~crdtstream.window.store.WindowStore`: windows merged from their slices.

A hopping window's value is the join of its slices' values: counters add up, gauges take the
LWW winner by ``(timestamp, replica)``, max/min the extreme, distinct the register-wise maximum,
distributions the summed buckets, sets the union of the slices' sets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from crdtstream.crdt.hyperloglog import hll_estimate
from crdtstream.window.kinds.dense import DENSE_KINDS
from crdtstream.window.kinds.distribution import DistributionValue
from crdtstream.window.results import WindowRead, WindowValue
from crdtstream.window.slices import SliceState

if TYPE_CHECKING:
    from crdtstream.window.store import WindowStore

__all__ = ["has_data", "read_key", "read_window", "value_of", "window_starts"]


def has_data(state: SliceState, kind: str, key: int) -> bool:
    """True when ``key`` of ``kind`` has state in the slice."""
    if kind in DENSE_KINDS:
        table = state.dense.get(kind)
        return table is not None and key < table.shape[1] and bool(table.version[:, key].any())
    if kind == "distinct":
        return state.registers.row(key) is not None
    if kind == "distribution":
        return state.distributions.has(key)
    cell = state.sets.get(key)
    return cell is not None and bool(cell.context or cell.cloud)


def value_of(store: WindowStore, kind: str, key: int, states: list[SliceState]) -> object:
    """The merged value of one key over the given slices (which all hold data of it)."""
    if kind == "counter":
        total = 0.0
        for table in _tables(states, kind, key):
            present = table.version[:, key] > 0
            total += float(
                (table.columns["p"][present, key] - table.columns["n"][present, key]).sum()
            )
        return total
    if kind in ("max", "min"):
        reduce = max if kind == "max" else min
        extremes = [
            reduce(t.columns["value"][t.version[:, key] > 0, key].tolist())
            for t in _tables(states, kind, key)
        ]
        return float(reduce(extremes))
    if kind == "gauge":
        return _gauge_value(store, states, key)
    if kind == "distinct":
        rows = [row for s in states if (row := s.registers.row(key)) is not None]
        return hll_estimate(np.maximum.reduce(rows), store.config.distinct_precision)
    if kind == "distribution":
        cells = [c for s in states for c in s.distributions.cells_of(key)]
        return DistributionValue.of(store.mapping, cells)
    items: frozenset[object] = frozenset()
    for state in states:
        cell = state.sets.get(key)
        if cell is not None:
            items |= cell.value
    return items


def _tables(states: list[SliceState], kind: str, key: int) -> list:  # type: ignore[type-arg]
    return [
        t
        for s in states
        if (t := s.dense.get(kind)) is not None and key < t.shape[1] and t.version[:, key].any()
    ]


def _gauge_value(store: WindowStore, states: list[SliceState], key: int) -> float:
    order = store.replica_order()
    best: tuple[int, int, int, float] | None = None
    for table in _tables(states, "gauge", key):
        for row in np.flatnonzero(table.version[:, key] > 0).tolist():
            candidate = (
                int(table.columns["timestamp_ms"][row, key]),
                int(order[row]),
                int(table.columns["sequence"][row, key]),
                float(table.columns["value"][row, key]),
            )
            if best is None or candidate[:3] > best[:3]:
                best = candidate
    assert best is not None  # callers only ask for keys with data
    return best[3]


def _window_states(store: WindowStore, start_ms: int) -> list[SliceState]:
    return [
        state
        for s in store.windows.slices_of_window(start_ms)
        if (state := store.slices.get(s)) is not None
    ]


def _final(store: WindowStore, start_ms: int, final_through_ms: int | None) -> bool:
    end_ms = store.windows.window_end(start_ms)
    return final_through_ms is not None and end_ms <= final_through_ms


def window_starts(store: WindowStore) -> list[int]:
    """Starts of retained windows containing a slice with state, oldest first."""
    floor = store.retention_floor_ms()
    starts = {w for s in store.slices for w in store.windows.windows_of_slice(s)}
    return sorted(w for w in starts if floor is None or w >= floor)


def read_key(store: WindowStore, key: str, final_through_ms: int | None) -> list[WindowValue]:
    """See :meth:`WindowStore.read_key`."""
    entry = store.keys.kind_of(key)
    if entry is None:
        return []
    kind, local = entry
    result = []
    for start in window_starts(store):
        states = [s for s in _window_states(store, start) if has_data(s, kind, local)]
        if states:
            value = value_of(store, kind, local, states)
            end = store.windows.window_end(start)
            result.append(WindowValue(start, end, value, _final(store, start, final_through_ms)))
    return result


def read_window(store: WindowStore, start_ms: int, final_through_ms: int | None) -> WindowRead:
    """See :meth:`WindowStore.read_window`."""
    if not store.windows.is_window_start(start_ms):
        raise ValueError(f"{start_ms} is not a window start (slide {store.windows.slide_ms} ms)")
    states = _window_states(store, start_ms)
    values: dict[str, object] = {}
    for kind, names in store.kind_keys.items():
        if kind in DENSE_KINDS:
            values.update(_dense_window(store, kind, states))
            continue
        for local in _keys_with_data(states, kind):
            holding = [s for s in states if has_data(s, kind, local)]
            values[names[local]] = value_of(store, kind, local, holding)
    end = store.windows.window_end(start_ms)
    return WindowRead(start_ms, end, _final(store, start_ms, final_through_ms), values)


def _keys_with_data(states: list[SliceState], kind: str) -> list[int]:
    found: set[int] = set()
    for state in states:
        keys: npt.NDArray[np.int64] | list[int]
        if kind in DENSE_KINDS:
            table = state.dense.get(kind)
            keys = [] if table is None else np.flatnonzero(table.version.any(axis=0))
        elif kind == "distinct":
            keys = state.registers.keys_present()
        elif kind == "distribution":
            keys = state.distributions.keys_present()
        else:
            keys = [k for k, c in state.sets.items() if c.context or c.cloud]
        found.update(int(k) for k in keys)
    return sorted(found)


def _dense_window(store: WindowStore, kind: str, states: list[SliceState]) -> dict[str, float]:
    """Every key's value of a dense kind in one window, vectorised over keys."""
    names = store.kind_keys[kind]
    present = np.zeros(len(names), dtype=np.bool_)
    if kind == "gauge":
        result = _gauge_window(store, states, present)
    else:
        result = np.zeros(len(names)) if kind == "counter" else np.full(len(names), np.nan)
        for state in states:
            table = state.dense.get(kind)
            if table is None:
                continue
            # Tables grow in steps, so they may be wider than the keys interned so far.
            width = min(table.shape[1], len(names))
            written = table.version[:, :width] > 0
            present[:width] |= written.any(axis=0)
            if kind == "counter":
                difference = table.columns["p"][:, :width] - table.columns["n"][:, :width]
                result[:width] += np.where(written, difference, 0.0).sum(axis=0)
            else:
                reduce = np.fmax if kind == "max" else np.fmin
                column = np.where(written, table.columns["value"][:, :width], np.nan)
                result[:width] = reduce(result[:width], reduce.reduce(column, axis=0))
    return {names[k]: float(result[k]) for k in np.flatnonzero(present).tolist()}


def _gauge_window(
    store: WindowStore, states: list[SliceState], present: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64]:
    """LWW winners per key by (timestamp, replica name, sequence), across slices and rows."""
    count = len(present)
    best_ms = np.full(count, np.iinfo(np.int64).min)
    best_rank = np.full(count, -1)
    best_sequence = np.full(count, -1)
    best_value = np.full(count, np.nan)
    order = store.replica_order()
    for state in states:
        table = state.dense.get("gauge")
        if table is None:
            continue
        width = min(table.shape[1], count)
        for row in range(table.shape[0]):
            stamp = table.columns["timestamp_ms"][row, :width]
            sequence = table.columns["sequence"][row, :width]
            rank = order[row]
            held_ms, held_rank = best_ms[:width], best_rank[:width]
            newer = (stamp > held_ms) | (
                (stamp == held_ms)
                & ((rank > held_rank) | ((rank == held_rank) & (sequence > best_sequence[:width])))
            )
            better = (table.version[row, :width] > 0) & newer
            best_ms[:width][better] = stamp[better]
            best_rank[:width][better] = rank
            best_sequence[:width][better] = sequence[better]
            best_value[:width][better] = table.columns["value"][row, :width][better]
            present[:width] |= better
    return best_value
