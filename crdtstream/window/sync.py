"""Delta extraction and merging for :class:`~crdtstream.window.store.WindowStore`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from crdtstream.window.cells import KINDS, KindCells
from crdtstream.window.delta import StoreDelta, WindowVersions

if TYPE_CHECKING:
    from crdtstream.window.store import WindowStore

__all__ = ["delta_since", "key_state", "merge"]


def _empty_delta(store: WindowStore, keys: list[str], replicas: list[str]) -> StoreDelta:
    config = store.config
    return StoreDelta(
        config.distinct_precision, config.distribution_relative_accuracy, keys, replicas
    )


def delta_since(store: WindowStore, version: int) -> StoreDelta:
    """Cells and window-version entries of ``store`` changed after ``version``."""
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
            inflated[chosen] = state.merge(
                kind, local_keys[chosen], rows[chosen], cells.take(chosen), shape, version
            )
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
        entry = store.window_counts.setdefault((start, int(rows_of[replica])), [0, 0])
        if count > entry[0]:
            entry[0], entry[1] = count, version
            inflated[index] = True
    return windows.take(inflated)
