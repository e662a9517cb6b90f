"""The columnar output of the statsd parsers: one :class:`KindBatch` per store kind.

A batch carries exactly the arrays the windowed store's ``ingest`` takes::

    for kind, batch in result.batches.items():
        store.ingest(kind, batch.key_names, batch.key_index, batch.values, batch.timestamps_ms,
                     weights=batch.weights, relative=batch.relative,
                     key_ids=batch.key_ids, key_space=batch.key_space)

Rows keep the order of the input (line by line, packed values left to right); ``key_names``
lists each kind's distinct canonical keys once, in an order that carries no meaning. Two batches
are equal when they hold the same rows in the same order: the same key for every row and
bit-identical values, times, weights and flags, however the keys happen to be numbered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "KINDS",
    "REASONS",
    "Kind",
    "KindBatch",
    "ParseResult",
    "dense_index",
]

Kind = Literal["counter", "gauge", "distinct", "distribution"]
KINDS: Final[tuple[Kind, ...]] = ("counter", "gauge", "distinct", "distribution")

REASONS: Final[tuple[str, ...]] = (
    "oversize_line",
    "unsupported_event",
    "missing_value",
    "missing_type",
    "unknown_type",
    "empty_field",
    "duplicate_field",
    "unknown_field",
    "bad_rate",
    "rate_out_of_range",
    "bad_timestamp",
    "empty_name",
    "bad_name",
    "non_utf8_name",
    "bad_tag",
    "non_utf8_tag",
    "bad_number",
)
"""Every reason a line can be rejected for, in the order the checks run (first failing wins);
``missing_value`` is also the reason for an empty value, found last, when values are read."""


@dataclass(frozen=True, slots=True, eq=False)
class KindBatch:
    """The rows of one kind: ``N`` events over ``len(key_names)`` distinct keys.

    ``values`` is float64, except for ``distinct`` where it holds uint64 member hashes.
    ``weights`` is the sample count of each row (``1 / rate`` for distributions, 1 elsewhere:
    counter values are already scaled by ``1 / rate``). ``relative`` marks gauge ``+N``/``-N``
    adjustments. ``key_ids`` (vectorised parser only) are the parser's lasting ids of
    ``key_names``, valid within the numbering ``key_space`` names, so a store can remember them
    and skip looking the names up; they are not part of equality.
    """

    key_names: list[str]
    key_index: npt.NDArray[np.int64]
    values: npt.NDArray[Any]
    timestamps_ms: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float64]
    relative: npt.NDArray[np.bool_]
    key_ids: npt.NDArray[np.int64] | None = None
    key_space: object | None = None

    def __len__(self) -> int:
        return int(self.key_index.shape[0])

    def __eq__(self, other: object) -> bool:
        """Same rows in the same order (keys compared by name), arrays bit-identical (so
        ``-0.0`` differs from ``0.0``)."""
        if not isinstance(other, KindBatch):
            return NotImplemented
        return (
            self.key_index.dtype == other.key_index.dtype == np.int64
            and len(self.key_names) == len(other.key_names)
            and set(self.key_names) == set(other.key_names)
            and self.row_keys() == other.row_keys()
            and all(
                _same_array(mine, theirs)
                for mine, theirs in (
                    (self.values, other.values),
                    (self.timestamps_ms, other.timestamps_ms),
                    (self.weights, other.weights),
                    (self.relative, other.relative),
                )
            )
        )

    def row_keys(self) -> list[str]:
        """The key name of every row."""
        names = np.array(self.key_names, dtype=object)
        keys: list[str] = names[self.key_index].tolist()
        return keys

    __hash__ = None  # type: ignore[assignment]

    def rows(self) -> list[tuple[str, object, int, float, bool]]:
        """The rows as ``(key, value, timestamp_ms, weight, relative)`` tuples, for reading."""
        return [
            (self.key_names[index], value, timestamp, weight, relative)
            for index, value, timestamp, weight, relative in zip(
                self.key_index.tolist(),
                self.values.tolist(),
                self.timestamps_ms.tolist(),
                self.weights.tolist(),
                self.relative.tolist(),
                strict=True,
            )
        ]


def _same_array(mine: npt.NDArray[Any], theirs: npt.NDArray[Any]) -> bool:
    return (
        mine.dtype == theirs.dtype
        and mine.shape == theirs.shape
        and mine.tobytes() == theirs.tobytes()
    )


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What one call of a parser returns.

    ``batches`` holds only kinds that received rows. ``errors`` counts rejected lines by reason
    (only reasons that occurred). Empty lines are neither accepted nor rejected.
    """

    batches: Mapping[Kind, KindBatch] = field(default_factory=dict)
    errors: Mapping[str, int] = field(default_factory=dict)
    lines_ok: int = 0
    lines_rejected: int = 0


def dense_index(
    ids: npt.NDArray[np.int64], id_count: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Renumber ``ids`` (each in ``[0, id_count)``) densely, without sorting.

    Returns ``(distinct, dense)``: the distinct ids in increasing order, and for each row the
    position of its id in ``distinct``.
    """
    used = np.zeros(id_count, dtype=np.bool_)
    used[ids] = True
    position = np.cumsum(used, dtype=np.int64) - 1
    return np.flatnonzero(used).astype(np.int64), position[ids]
