"""Validation of cells arriving from peers or files: every shape, type and range is checked.

Anything wrong raises ValueError/TypeError, which :func:`crdtstream.wire.decode_as` turns into
:class:`~crdtstream.errors.DecodeError`. After these checks a delta merges without surprises.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from crdtstream.window.cells import (
    DISTRIBUTION_COLUMNS,
    REPLICA_LESS_KINDS,
    KindCells,
    object_array,
)
from crdtstream.window.kinds.dense import DENSE_KINDS
from crdtstream.window.kinds.orset import OrSetCell

__all__ = ["parse_cells"]

_COLUMNS: dict[str, dict[str, str]] = {
    **{kind: {n: d for n, d, _ in spec.columns} for kind, spec in DENSE_KINDS.items()},
    "distribution": dict(
        zip(DISTRIBUTION_COLUMNS, ("i8", "f8", "f8", "f8", "f8", "f8"), strict=True)
    ),
    "distinct": {},
}
_ENTRIES: dict[str, dict[str, str]] = {
    "distribution": {"negative": "b1", "bucket": "i8", "count": "f8"},
    "distinct": {"index": "i8", "rank": "u1"},
}


def int_array(value: Any) -> npt.NDArray[np.int64]:
    """``value`` when it is a one-dimensional int64 array; TypeError otherwise."""
    if not (isinstance(value, np.ndarray) and value.dtype == np.int64 and value.ndim == 1):
        raise TypeError("expected a one-dimensional int64 array")
    return value


def parse_cells(
    kind: str, body: Any, key_count: int, replica_count: int, parameters: tuple[int, float]
) -> KindCells:
    """Rebuild and check the cells of ``kind`` from :meth:`KindCells.to_wire`."""
    if not (isinstance(body, list) and len(body) == 6):
        raise ValueError(f"{kind} cells must be a list of six fields")
    key, slice_start, replica = (int_array(a) for a in body[:3])
    count = len(key)
    if not len(slice_start) == len(replica) == count:
        raise ValueError(f"{kind} cell arrays differ in length")
    if count and (key.min() < 0 or key.max() >= key_count):
        raise ValueError(f"{kind} key index out of range")
    if kind in REPLICA_LESS_KINDS:
        if count and (replica != -1).any():
            raise ValueError(f"{kind} cells carry replica -1")
    elif count and (replica.min() < 0 or replica.max() >= replica_count):
        raise ValueError(f"{kind} replica index out of range")
    cells = KindCells(key, slice_start, replica, _columns(kind, dict(body[3]), count))
    if kind in _ENTRIES:
        cells.entries = _typed(dict(body[4]), _ENTRIES[kind], None, f"{kind} entries")
        cells.entry_cell = _entry_cells(body[5], cells.entries, count)
    elif dict(body[4]) or len(int_array(body[5])):
        raise ValueError(f"{kind} cells carry no entries")
    _check_ranges(kind, cells, parameters)
    return cells


def _typed(body: dict[Any, Any], schema: dict[str, str], count: int | None, what: str) -> Any:
    if set(body) != set(schema):
        raise ValueError(f"{what} must be {sorted(schema)}")
    lengths = set()
    for name, dtype in schema.items():
        column = body[name]
        if not isinstance(column, np.ndarray) or column.dtype != np.dtype(dtype):
            raise TypeError(f"{what}: {name} must be a {dtype} array")
        if column.ndim != 1:
            raise ValueError(f"{what}: {name} must be one-dimensional")
        lengths.add(len(column))
    if len(lengths) > 1 or (count is not None and lengths and lengths != {count}):
        raise ValueError(f"{what} differ in length")
    return body


def _columns(kind: str, body: dict[Any, Any], count: int) -> Any:
    if kind == "set":
        cells = body.get("cell")
        if not (isinstance(cells, list) and len(cells) == count) or len(body) != 1:
            raise ValueError("set needs one object per cell")
        return {"cell": object_array([OrSetCell.from_wire(c) for c in cells])}
    return _typed(body, _COLUMNS[kind], count, f"{kind} columns")


def _entry_cells(value: Any, entries: dict[str, Any], count: int) -> npt.NDArray[np.int64]:
    owner = int_array(value)
    if len(owner) != len(next(iter(entries.values()))):
        raise ValueError("entry owners differ in length from the entries")
    if len(owner) and (owner.min() < 0 or owner.max() >= count or (np.diff(owner) < 0).any()):
        raise ValueError("entry owners must be sorted cell indices")
    return owner


def _check_ranges(kind: str, cells: KindCells, parameters: tuple[int, float]) -> None:
    precision, accuracy = parameters
    columns, entries = cells.columns, cells.entries
    finite = [n for n in columns if columns[n].dtype.kind == "f" and n != "value"]
    if kind == "distribution":
        finite = ["count", "total", "zero_count"]
    if any(not np.isfinite(columns[n]).all() for n in finite):
        raise ValueError(f"{kind} columns must be finite")
    if kind == "counter" and len(cells) and min(columns["p"].min(), columns["n"].min()) < 0:
        raise ValueError("counter slots must be >= 0")
    if kind == "distinct" and len(cells.entry_cell):
        index, rank = entries["index"], entries["rank"]
        if index.min() < 0 or index.max() >= 1 << precision:
            raise ValueError("distinct register index out of range")
        if rank.min() < 1 or rank.max() > 65 - precision:
            raise ValueError("distinct register rank out of range")
    if kind == "distribution":
        if len(cells) and columns["sequence"].min() < 0:
            raise ValueError("distribution sequence must be >= 0")
        gamma = (1.0 + accuracy) / (1.0 - accuracy)
        # Keys beyond this map no finite double: reading them back would overflow.
        bound = math.ceil(800.0 / math.log(gamma))
        buckets, counts = entries["bucket"], entries["count"]
        if len(buckets) and (np.abs(buckets).max() > bound or not (counts > 0).all()):
            raise ValueError("distribution buckets out of range")
        if not np.isfinite(counts).all():
            raise ValueError("distribution bucket counts must be finite")
