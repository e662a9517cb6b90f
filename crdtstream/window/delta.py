"""Store deltas: delta-groups of windowed state, the unit of gossip and of snapshots.

A :class:`StoreDelta` holds cells ``(key, slice, replica)`` of any kinds plus per-window version
vector entries ``(slice, replica) -> writes``. Joining deltas is the lattice join cell by cell
(idempotent, commutative, associative); a delta from :meth:`WindowStore.delta_since`, a full state
and a merge's novelty all have this one shape. Key and replica names travel as strings because
every store interns them to its own dense ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from crdtstream import wire
from crdtstream.crdt.hyperloglog import validate_precision
from crdtstream.errors import MergeError
from crdtstream.window.cells import KINDS, KindCells
from crdtstream.window.cells_wire import int_array, parse_cells

__all__ = ["StoreDelta", "WindowVersions"]

_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(slots=True)
class WindowVersions:
    """Per-window version vector entries: replica ``replica[i]`` wrote ``count[i]`` times to the
    slice starting at ``slice_start[i]``. Joined by maximum."""

    slice_start: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY)
    replica: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY)
    count: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY)

    def __len__(self) -> int:
        return len(self.slice_start)

    def take(self, index: npt.NDArray[np.int64] | npt.NDArray[np.bool_]) -> WindowVersions:
        """The entries selected by an index or mask array."""
        return WindowVersions(self.slice_start[index], self.replica[index], self.count[index])

    def deduplicated(self) -> WindowVersions:
        """One entry per (slice, replica) holding the maximum count, sorted."""
        order = np.lexsort((-self.count, self.replica, self.slice_start))
        ordered = self.take(order)
        first = np.ones(len(ordered), dtype=np.bool_)
        first[1:] = (ordered.slice_start[1:] != ordered.slice_start[:-1]) | (
            ordered.replica[1:] != ordered.replica[:-1]
        )
        return ordered.take(first)


@dataclass(slots=True)
class StoreDelta:
    """A delta-group of windowed store state (see the module docstring)."""

    distinct_precision: int
    relative_accuracy: float
    keys: list[str] = field(default_factory=list)
    replicas: list[str] = field(default_factory=list)
    cells: dict[str, KindCells] = field(default_factory=dict)
    windows: WindowVersions = field(default_factory=WindowVersions)

    @property
    def cell_count(self) -> int:
        """How many (key, slice, replica) cells the delta holds."""
        return sum(len(c) for c in self.cells.values())

    def is_empty(self) -> bool:
        """True when the delta holds no cell and no window version entry."""
        return self.cell_count == 0 and len(self.windows) == 0

    def check_compatible(self, distinct_precision: int, relative_accuracy: float) -> None:
        """Raise :class:`MergeError` unless the state parameters are the given ones."""
        if (self.distinct_precision, self.relative_accuracy) != (
            distinct_precision,
            relative_accuracy,
        ):
            raise MergeError(
                "store deltas differ in parameters: distinct_precision "
                f"{self.distinct_precision} vs {distinct_precision}, relative_accuracy "
                f"{self.relative_accuracy} vs {relative_accuracy}"
            )

    def join(self, other: StoreDelta) -> StoreDelta:
        """The join of two deltas (a new delta; neither input changes)."""
        return StoreDelta.join_all([self, other])

    @staticmethod
    def join_all(deltas: Sequence[StoreDelta]) -> StoreDelta:
        """The join of one or more deltas in one pass (a new delta; no input changes)."""
        first = deltas[0]
        for delta in deltas[1:]:
            delta.check_compatible(first.distinct_precision, first.relative_accuracy)
        keys = list(dict.fromkeys(key for delta in deltas for key in delta.keys))
        replicas = list(dict.fromkeys(name for delta in deltas for name in delta.replicas))
        renamed = [delta.renamed(keys, replicas) for delta in deltas]
        result = StoreDelta(first.distinct_precision, first.relative_accuracy, keys, replicas)
        for kind in KINDS:
            parts = [delta.cells[kind] for delta in renamed if kind in delta.cells]
            if parts:
                result.cells[kind] = KindCells.concatenate(parts).deduplicated(kind)
        result.windows = _concatenate_windows([delta.windows for delta in renamed]).deduplicated()
        return result.compacted()

    def renamed(self, keys: list[str], replicas: list[str]) -> StoreDelta:
        """The same delta indexing into ``keys``/``replicas`` (supersets of its own lists)."""
        key_map = _index_map(self.keys, keys)
        replica_map = np.append(_index_map(self.replicas, replicas), -1)
        cells = {
            kind: c.reindexed(key_map[c.key], replica_map[c.replica])
            for kind, c in self.cells.items()
        }
        windows = WindowVersions(
            self.windows.slice_start, replica_map[self.windows.replica], self.windows.count
        )
        return StoreDelta(
            self.distinct_precision, self.relative_accuracy, keys, replicas, cells, windows
        )

    def compacted(self) -> StoreDelta:
        """The same delta with only the key and replica names it references."""
        used_keys = np.unique(np.concatenate([_EMPTY, *(c.key for c in self.cells.values())]))
        used_replicas = np.unique(
            np.concatenate(
                [_EMPTY, self.windows.replica, *(c.replica for c in self.cells.values())]
            )
        )
        used_replicas = used_replicas[used_replicas >= 0]
        keys = [self.keys[i] for i in used_keys]
        replicas = [self.replicas[i] for i in used_replicas]
        key_map = np.full(len(self.keys), -1, dtype=np.int64)
        key_map[used_keys] = np.arange(len(used_keys))
        replica_map = np.full(len(self.replicas) + 1, -1, dtype=np.int64)
        replica_map[used_replicas] = np.arange(len(used_replicas))
        cells = {
            kind: c.reindexed(key_map[c.key], replica_map[c.replica])
            for kind, c in self.cells.items()
            if len(c)
        }
        windows = WindowVersions(
            self.windows.slice_start, replica_map[self.windows.replica], self.windows.count
        )
        return StoreDelta(
            self.distinct_precision, self.relative_accuracy, keys, replicas, cells, windows
        )

    def to_bytes(self) -> bytes:
        """The delta as one wire frame (tag ``WINDOW_DELTA``)."""
        return wire.encode(wire.Tag.WINDOW_DELTA, self.to_wire())

    def to_wire(self) -> dict[str, Any]:
        """The delta as msgpack-able values (also embedded in store snapshots)."""
        return {
            "precision": self.distinct_precision,
            "accuracy": self.relative_accuracy,
            "keys": self.keys,
            "replicas": self.replicas,
            "cells": {kind: c.to_wire() for kind, c in self.cells.items()},
            "windows": [self.windows.slice_start, self.windows.replica, self.windows.count],
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> StoreDelta:
        """Decode :meth:`to_bytes`; anything malformed raises :class:`DecodeError` only."""
        return wire.decode_as(data, wire.Tag.WINDOW_DELTA, cls.from_wire)

    @classmethod
    def from_wire(cls, body: Any) -> StoreDelta:
        """Rebuild a delta from :meth:`to_wire`, validating everything (ValueError/TypeError)."""
        precision = validate_precision(body["precision"])
        accuracy = body["accuracy"]
        # The range WindowConfig allows: far smaller values make the bucket bound divide by 0.
        if not (isinstance(accuracy, float) and 0.0005 <= accuracy < 1.0):
            raise ValueError("relative_accuracy must be a float in [0.0005, 1)")
        keys, replicas = _names(body["keys"]), _names(body["replicas"])
        cells: dict[str, KindCells] = {}
        for kind, cell_body in dict(body["cells"]).items():
            if kind not in KINDS:
                raise ValueError(f"unknown kind {kind!r}")
            parsed = parse_cells(kind, cell_body, len(keys), len(replicas), (precision, accuracy))
            cells[kind] = parsed.deduplicated(kind)
        slice_start, replica, count = (int_array(a) for a in body["windows"])
        if not (len(slice_start) == len(replica) == len(count)):
            raise ValueError("window version arrays differ in length")
        if len(replica) and (replica.min() < 0 or replica.max() >= len(replicas)):
            raise ValueError("window version replica index out of range")
        if len(count) and count.min() < 0:
            raise ValueError("window version counts must be >= 0")
        windows = WindowVersions(slice_start, replica, count).deduplicated()
        return cls(precision, accuracy, keys, replicas, cells, windows)

    def split(self, max_bytes: int) -> list[StoreDelta]:
        """Parts that each encode to at most ``max_bytes`` and can be merged on their own.

        The window version entries travel in the last part(s), after the cells they count, so a
        receiver processing the parts in order never sees a count before its data. A single cell
        larger than ``max_bytes`` raises :class:`ValueError`.
        """
        if len(self.to_bytes()) <= max_bytes:
            return [self]
        parts: list[StoreDelta] = []
        cells_only = StoreDelta(
            self.distinct_precision, self.relative_accuracy, self.keys, self.replicas, self.cells
        )
        windows_only = StoreDelta(
            self.distinct_precision,
            self.relative_accuracy,
            self.keys,
            self.replicas,
            windows=self.windows,
        )
        for piece in (cells_only, windows_only):
            if not piece.is_empty():
                _split_into(piece.compacted(), max_bytes, parts)
        return parts

    def pieces(self, count: int) -> list[StoreDelta]:
        """``count`` deltas of about equal numbers of entries, whose join is this one."""
        total = self.cell_count + len(self.windows)
        bounds = np.linspace(0, total, count + 1).astype(np.int64)
        result = []
        for low, high in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            piece = StoreDelta(
                self.distinct_precision, self.relative_accuracy, self.keys, self.replicas
            )
            offset = 0
            for kind, cells in self.cells.items():
                chosen = np.arange(max(low, offset), min(high, offset + len(cells))) - offset
                if len(chosen):
                    piece.cells[kind] = cells.take(chosen)
                offset += len(cells)
            chosen = np.arange(max(low, offset), min(high, offset + len(self.windows))) - offset
            piece.windows = self.windows.take(chosen)
            result.append(piece.compacted())
        return result


def _split_into(delta: StoreDelta, max_bytes: int, parts: list[StoreDelta]) -> None:
    size = len(delta.to_bytes())
    if size <= max_bytes:
        parts.append(delta)
        return
    if delta.cell_count + len(delta.windows) <= 1:
        raise ValueError(f"one entry of the delta alone encodes to more than {max_bytes} bytes")
    # Aim straight for parts a little under the limit (sizes are close to proportional to the
    # entries); a part that still overflows is split again.
    count = min(delta.cell_count + len(delta.windows), max(2, -(-size * 5 // (max_bytes * 4))))
    for piece in delta.pieces(count):
        _split_into(piece, max_bytes, parts)


def _index_map(names: list[str], into: list[str]) -> npt.NDArray[np.int64]:
    position = {name: i for i, name in enumerate(into)}
    return np.asarray([position[name] for name in names], dtype=np.int64)


def _concatenate_windows(parts: list[WindowVersions]) -> WindowVersions:
    return WindowVersions(
        np.concatenate([p.slice_start for p in parts]),
        np.concatenate([p.replica for p in parts]),
        np.concatenate([p.count for p in parts]),
    )


def _names(value: Any) -> list[str]:
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise TypeError("names must be a list of strings")
    if len(set(value)) != len(value):
        raise ValueError("names must be distinct")
    return value
