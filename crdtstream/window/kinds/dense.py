"""Dense kinds: counter, gauge, max and min, held as (replica x key) matrices per slice.

Every replica writes only its own row, so a row is that replica's history and joins are plain
lattice joins per cell: counter P/N slots by max (each only grows), gauge by the larger
``(timestamp_ms, sequence)``, max/min by max/min. ``sequence`` is the writing store's version at
the time of the write, so a replica's later write at the same timestamp wins in its own slot.
A cell is present when its ``version`` (the local store version of its last change) is > 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["DENSE_KINDS", "Columns", "DenseKind", "DenseTable", "sum_by_code"]

Columns = dict[str, npt.NDArray[Any]]
"""Named, equally long columns of cell values."""

_TIMESTAMP_EMPTY = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True)
class DenseKind:
    """The columns of a dense kind, their empty values, and its join rule."""

    name: str
    columns: tuple[tuple[str, str, float | int], ...]

    def empty(self, count: int) -> Columns:
        """``count`` empty cells."""
        return {name: np.full(count, fill, dtype=dtype) for name, dtype, fill in self.columns}

    def join(self, left: Columns, right: Columns) -> Columns:
        """The lattice join of two equally long sets of cells, element by element."""
        if self.name == "counter":
            return {"p": np.maximum(left["p"], right["p"]), "n": np.maximum(left["n"], right["n"])}
        if self.name == "max":
            return {"value": np.fmax(left["value"], right["value"])}
        if self.name == "min":
            return {"value": np.fmin(left["value"], right["value"])}
        newer = (right["timestamp_ms"] > left["timestamp_ms"]) | (
            (right["timestamp_ms"] == left["timestamp_ms"]) & (right["sequence"] > left["sequence"])
        )
        return {name: np.where(newer, right[name], left[name]) for name in left}

    def differs(self, left: Columns, right: Columns) -> npt.NDArray[np.bool_]:
        """Which cells differ in any column (NaN equals NaN)."""
        mask = np.zeros(len(next(iter(left.values()))), dtype=np.bool_)
        for name in left:
            a, b = left[name], right[name]
            same = a == b
            if a.dtype.kind == "f":
                same |= np.isnan(a) & np.isnan(b)
            mask |= ~same
        return mask


COUNTER = DenseKind("counter", (("p", "f8", 0.0), ("n", "f8", 0.0)))
GAUGE = DenseKind(
    "gauge",
    (("timestamp_ms", "i8", _TIMESTAMP_EMPTY), ("sequence", "i8", 0), ("value", "f8", np.nan)),
)
MAXIMUM = DenseKind("max", (("value", "f8", -np.inf),))
MINIMUM = DenseKind("min", (("value", "f8", np.inf),))
DENSE_KINDS = {kind.name: kind for kind in (COUNTER, GAUGE, MAXIMUM, MINIMUM)}


@dataclass(slots=True)
class DenseTable:
    """One dense kind in one slice: each column and ``version`` is a (replicas, keys) matrix."""

    kind: DenseKind
    columns: Columns = field(default_factory=dict)
    version: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 0), np.int64))

    def __post_init__(self) -> None:
        if not self.columns:
            self.columns = {n: np.full((0, 0), f, dtype=d) for n, d, f in self.kind.columns}

    @property
    def shape(self) -> tuple[int, int]:
        """(replica rows, key capacity)."""
        rows, keys = self.version.shape
        return rows, keys

    def ensure(self, replicas: int, keys: int) -> None:
        """Grow to hold ``replicas`` rows and ``keys`` keys (keys doubling, amortised)."""
        rows, capacity = self.shape
        if replicas <= rows and keys <= capacity:
            return
        new_rows = max(rows, replicas)
        new_capacity = capacity if keys <= capacity else max(keys, 2 * capacity, 16)
        for name, dtype, fill in self.kind.columns:
            grown = np.full((new_rows, new_capacity), fill, dtype=dtype)
            grown[:rows, :capacity] = self.columns[name]
            self.columns[name] = grown
        version = np.zeros((new_rows, new_capacity), dtype=np.int64)
        version[:rows, :capacity] = self.version
        self.version = version

    def gather(self, rows: npt.NDArray[np.int64], keys: npt.NDArray[np.int64]) -> Columns:
        """The cells at ``(rows[i], keys[i])``."""
        return {name: column[rows, keys] for name, column in self.columns.items()}

    def scatter(
        self,
        rows: npt.NDArray[np.int64],
        keys: npt.NDArray[np.int64],
        cells: Columns,
        version: int,
    ) -> None:
        """Overwrite the cells at ``(rows[i], keys[i])`` and stamp them with ``version``."""
        for name, values in cells.items():
            self.columns[name][rows, keys] = values
        self.version[rows, keys] = version

    def merge(
        self,
        rows: npt.NDArray[np.int64],
        keys: npt.NDArray[np.int64],
        incoming: Columns,
        version: int,
    ) -> npt.NDArray[np.bool_]:
        """Join distinct incoming cells in place; return which of them inflated the state."""
        local = self.gather(rows, keys)
        joined = self.kind.join(local, incoming)
        inflated = self.kind.differs(local, joined)
        if inflated.any():
            self.scatter(
                rows[inflated], keys[inflated], {n: c[inflated] for n, c in joined.items()}, version
            )
        return inflated

    def changed_since(
        self, version: int, candidates: npt.NDArray[np.int64] | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], Columns]:
        """Rows, keys and values of the cells changed after ``version``, row by row and keys
        ascending; with ``candidates`` (sorted distinct key ids, a superset of the changed
        ones), only their columns are looked at."""
        if candidates is None:
            rows, keys = np.nonzero(self.version > version)
        else:
            candidates = candidates[candidates < self.version.shape[1]]
            rows, chosen = np.nonzero(self.version[:, candidates] > version)
            keys = candidates[chosen]
        return rows.astype(np.int64), keys.astype(np.int64), self.gather(rows, keys)

    def nbytes(self) -> int:
        """Bytes of numpy state held."""
        return int(self.version.nbytes + sum(c.nbytes for c in self.columns.values()))


def sum_by_code(
    codes: npt.NDArray[np.int64], weights: npt.NDArray[np.float64], code_count: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Distinct codes with a non-zero weight sum, and those sums.

    ``np.bincount`` is the fastest grouping when the code space is not much larger than the
    batch; for a small batch over a large space a sort is cheaper than touching every bin.
    """
    if code_count <= 4 * len(codes) + 1024:
        sums = np.bincount(codes, weights=weights, minlength=code_count)
        present = np.flatnonzero(sums).astype(np.int64)
        return present, sums[present].astype(np.float64)
    unique, inverse = np.unique(codes, return_inverse=True)
    sums = np.bincount(inverse, weights=weights, minlength=len(unique))
    keep = sums != 0
    return unique[keep].astype(np.int64), sums[keep].astype(np.float64)
