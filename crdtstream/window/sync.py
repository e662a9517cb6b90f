"""Delta extraction and merging for :class:`~crdtstream.window.store.WindowStore`.

A delta since a recent version is assembled from the store's
:class:`~crdtstream.window.journal.ChangeJournal`: only the slices, the keys within them and
the window version entries that the journal names are looked at, so logging or gossiping one
changed cell costs about the same in a store of ten keys and in one of a hundred thousand. It
holds the same cells and entries as the walk over every slice (:func:`walk_delta_since`), in an
order of its own (slices and entries sorted). A version the journal no longer covers, or one
followed by many changes, takes the walk, as does the full state (snapshots keep the walk's
order); the walk is also the reference the journal's path is tested against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from crdtstream.window.cells import KINDS, KindCells
from crdtstream.window.delta import StoreDelta, WindowVersions
from crdtstream.window.journal import WINDOW_COUNTS, Changes

if TYPE_CHECKING:
    from crdtstream.window.store import WindowStore

__all__ = ["delta_since", "key_state", "merge", "walk_delta_since"]


def _empty_delta(store: WindowStore, keys: list[str], replicas: list[str]) -> StoreDelta:
    config = store.config
    return StoreDelta(
        config.distinct_precision, config.distribution_relative_accuracy, keys, replicas
    )


def delta_since(store: WindowStore, version: int) -> StoreDelta:
    """Cells and window-version entries of ``store`` changed after ``version``."""
    if version >= store.version:
        return _empty_delta(store, [], [])
    # Past a few entries per retained (kind, slice) pair, walking every slice costs less.
    changes = store.journal.since(version, 64 + 2 * len(KINDS) * len(store.slices))
    if changes is None:
        return walk_delta_since(store, version)
    keys: list[str] = []
    delta = _empty_delta(store, keys, [])
    for kind in KINDS:
        slices = changes.get(kind)
        if not slices:
            continue
        parts = []
        for start in sorted(slices):
            state = store.slices.get(start)
            if state is not None:
                cells = state.changed_since(kind, version, start, slices[start])
                if len(cells):
                    parts.append(cells)
        if not parts:
            continue
        cells = parts[0] if len(parts) == 1 else KindCells.concatenate(parts)
        # np.unique's inverse costs more than a search among the few distinct keys.
        unique = np.unique(cells.key)
        names = store.kind_keys[kind]
        cells.key = len(keys) + np.searchsorted(unique, cells.key).astype(np.int64)
        keys.extend([names[i] for i in unique.tolist()])
        delta.cells[kind] = cells
    delta.windows = _windows_changed_since(store, version, changes)
    _name_replicas(store, delta)
    return delta


def _windows_changed_since(store: WindowStore, version: int, changes: Changes) -> WindowVersions:
    """Window version entries changed after ``version``: this replica's (row 0) in the slices
    its writes changed, which the journal names under their kinds, and the merged ones it names
    under ``WINDOW_COUNTS``."""
    slots = {(start, 0) for kind in KINDS for start in changes.get(kind, ())}
    for start, rows in changes.get(WINDOW_COUNTS, {}).items():
        every = range(len(store.replicas))
        slots.update((start, row) for row in (every if rows is None else rows.tolist()))
    entries = []
    for slot in sorted(slots):
        entry = store.window_counts.get(slot)
        if entry is not None and entry[1] > version:
            entries.append((*slot, entry[0]))
    if not entries:
        return WindowVersions()
    starts, rows, counts = (
        np.asarray(column, dtype=np.int64) for column in zip(*entries, strict=True)
    )
    return WindowVersions(starts, rows, counts)


def _name_replicas(store: WindowStore, delta: StoreDelta) -> None:
    """Turn the store replica rows of ``delta`` into indices of its own replica list, holding
    only the replicas it references, in row order (as :meth:`StoreDelta.compacted` would)."""
    rows = np.concatenate(
        [delta.windows.replica, *(cells.replica for cells in delta.cells.values())]
    )
    used = np.unique(rows)
    used = used[used >= 0]
    delta.replicas = [store.replicas[row] for row in used.tolist()]
    position = np.full(len(store.replicas) + 1, -1, dtype=np.int64)
    position[used] = np.arange(len(used))
    for cells in delta.cells.values():
        cells.replica = position[cells.replica]
    delta.windows.replica = position[delta.windows.replica]


def walk_delta_since(store: WindowStore, version: int) -> StoreDelta:
    """:func:`delta_since` by a walk over every retained slice and window entry."""
    delta = _empty_delta(store, [], list(store.replicas))
    for kind in KINDS:
        parts = [
            state.changed_since(kind, version, start)
            for start, state in store.slices.items()
            if state.latest.get(kind, 0) > version
        ]
        parts = [part for part in parts if len(part)]
        if not parts:
            continue
        cells = KindCells.concatenate(parts)
        unique, inverse = np.unique(cells.key, return_inverse=True)
        names = store.kind_keys[kind]
        cells.key = len(delta.keys) + inverse.astype(np.int64)
        delta.keys.extend(names[i] for i in unique)
        delta.cells[kind] = cells
    entries = [(s, r, e[0]) for (s, r), e in store.window_counts.items() if e[1] > version]
    if entries:
        starts, rows, counts = (
            np.asarray(column, dtype=np.int64) for column in zip(*entries, strict=True)
        )
        delta.windows = WindowVersions(starts, rows, counts)
    return delta.compacted()


def key_state(store: WindowStore, key: str) -> StoreDelta:
    """Every retained cell of ``key`` (all windows, all replicas), without window versions."""
    delta = _empty_delta(store, [], list(store.replicas))
    entry = store.keys.kind_of(key)
    if entry is None:
        return delta
    kind, local = entry
    parts = []
    for start, state in store.slices.items():
        cells = state.changed_since(kind, 0, start)
        mine = cells.take(np.flatnonzero(cells.key == local))
        if len(mine):
            parts.append(mine)
    if parts:
        cells = KindCells.concatenate(parts)
        cells.key = np.zeros(len(cells), dtype=np.int64)
        delta.keys.append(key)
        delta.cells[kind] = cells
    return delta.compacted()


def merge(store: WindowStore, delta: StoreDelta) -> StoreDelta:
    """Join ``delta`` into ``store``; return the inflating part (see ``WindowStore.merge``)."""
    config = store.config
    delta.check_compatible(config.distinct_precision, config.distribution_relative_accuracy)
    version = store.version + 1
    rows_of = np.asarray([store.replica_row(r) for r in delta.replicas] + [-1], dtype=np.int64)
    floor = store.retention_floor_ms()
    slide = store.windows.slide_ms
    novelty = _empty_delta(store, delta.keys, delta.replicas)
    for kind, cells in delta.cells.items():
        used = np.unique(cells.key)
        ids, _ = store.intern_keys(kind, [delta.keys[i] for i in used])
        key_map = np.full(len(delta.keys), -1, dtype=np.int64)
        key_map[used] = ids
        local_keys = key_map[cells.key]
        known = local_keys >= 0
        store.merge_rejected_cells += int(np.count_nonzero(~known))
        aligned = cells.slice_start % slide == 0
        store.merge_rejected_cells += int(np.count_nonzero(known & ~aligned))
        keep = known & aligned
        if floor is not None:
            keep &= cells.slice_start >= floor
        inflated = np.zeros(len(cells), dtype=np.bool_)
        rows = rows_of[cells.replica]
        shape = (len(store.replicas), len(store.kind_keys[kind]))
        for start in np.unique(cells.slice_start[keep]).tolist():
            chosen = np.flatnonzero(keep & (cells.slice_start == start))
            state = store.slice_for(start // slide)
            grown = state.merge(
                kind, local_keys[chosen], rows[chosen], cells.take(chosen), shape, version
            )
            if grown.any():
                inflated[chosen] = grown
                store.journal.record(version, kind, start, local_keys[chosen[grown]])
        if inflated.any():
            novelty.cells[kind] = cells.take(inflated)
    novelty.windows = _merge_windows(store, delta.windows, rows_of, floor, version)
    if not novelty.is_empty():
        store.version = version
    return novelty.compacted()


def _merge_windows(
    store: WindowStore,
    windows: WindowVersions,
    rows_of: np.ndarray,
    floor: int | None,
    version: int,
) -> WindowVersions:
    inflated = np.zeros(len(windows), dtype=np.bool_)
    entries = zip(
        windows.slice_start.tolist(), windows.replica.tolist(), windows.count.tolist(), strict=True
    )
    for index, (start, replica, count) in enumerate(entries):
        if floor is not None and start < floor:
            continue
        row = int(rows_of[replica])
        entry = store.window_counts.setdefault((start, row), [0, 0])
        if count > entry[0]:
            entry[0], entry[1] = count, version
            inflated[index] = True
            store.journal.record(version, WINDOW_COUNTS, start, row)
    return windows.take(inflated)
