"""Assembling the rows of one kind into a :class:`~crdtstream.ingest.batch.KindBatch`: the
vectorised rows of simple lines and the per-line parser's rows of the others, interleaved back
into input order, with keys renumbered densely per kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from crdtstream.crdt.hashing import hash64_many
from crdtstream.ingest._front import Rows
from crdtstream.ingest.batch import KINDS, Kind, KindBatch
from crdtstream.ingest.statsd_reference import ParsedLine

__all__ = [
    "Columns",
    "Lines",
    "Rows",
    "compact_ids",
    "fallback_columns",
    "fast_columns",
    "kind_batch",
    "ordered",
]

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(slots=True)
class Lines:
    """Per-line facts gathered by the vectorised passes."""

    kind: npt.NDArray[np.int8]
    accepted: BoolArray  # simple lines whose key is valid
    rate: npt.NDArray[np.float64]
    timestamp_ms: Int64Array
    key_id: Int64Array  # index into the key table, -1 when the key was rejected


@dataclass(slots=True)
class Columns:
    """The rows of one kind before key renumbering, with the line each came from."""

    line: Int64Array
    key_id: Int64Array
    values: npt.NDArray[Any]
    timestamps_ms: Int64Array
    weights: npt.NDArray[np.float64]
    relative: BoolArray


def fast_columns(lines: Lines, rows: Rows, kind_index: int) -> Columns:
    """The rows of accepted simple lines of one kind: counters scaled by ``1 / rate``,
    distributions weighted by it, set members hashed, gauge signs kept as ``relative``."""
    keep = lines.accepted[rows.line] & (lines.kind[rows.line] == kind_index)
    line = rows.line[keep]
    values: npt.NDArray[Any] = rows.value[keep]
    weights = np.ones(line.shape[0], dtype=np.float64)
    kind = KINDS[kind_index]
    if kind == "counter":
        values = values * (1.0 / lines.rate[line])
    elif kind == "distribution":
        weights = 1.0 / lines.rate[line]
    elif kind == "distinct":
        assert rows.hashes is not None, "set-member rows carry their hashes"
        values = rows.hashes[keep]
    relative = rows.signed[keep] if kind == "gauge" else np.zeros(line.shape[0], dtype=np.bool_)
    return Columns(line, lines.key_id[line], values, lines.timestamp_ms[line], weights, relative)


def fallback_columns(
    fallback: dict[int, ParsedLine], kind: Kind, key_names: dict[str, int]
) -> Columns | None:
    """The rows of the per-line parser's accepted lines (by line number) of one kind, keys
    numbered by ``key_names``; None when there are none."""
    chosen = [(line, parsed) for line, parsed in fallback.items() if parsed.kind == kind]
    if not chosen:
        return None
    line: list[int] = []
    key_id: list[int] = []
    values: list[Any] = []
    timestamps_ms: list[int] = []
    weights: list[float] = []
    relative: list[bool] = []
    for line_number, parsed in chosen:
        count = len(parsed.values)
        line.extend([line_number] * count)
        key_id.extend([key_names[parsed.key]] * count)
        values.extend(parsed.values)
        timestamps_ms.extend([parsed.timestamp_ms] * count)
        weights.extend([parsed.weight] * count)
        relative.extend(parsed.relative)
    value_array = hash64_many(values) if kind == "distinct" else np.array(values, np.float64)
    return Columns(
        np.array(line, dtype=np.int64),
        np.array(key_id, dtype=np.int64),
        value_array,
        np.array(timestamps_ms, dtype=np.int64),
        np.array(weights, dtype=np.float64),
        np.array(relative, dtype=np.bool_),
    )


def ordered(fast: Columns, slow: Columns) -> Columns:
    """Both sources interleaved back into input order (a line lives in one source only)."""
    order = np.argsort(np.concatenate([fast.line, slow.line]), kind="stable")
    return Columns(
        *(
            np.concatenate([getattr(fast, name), getattr(slow, name)])[order]
            for name in ("line", "key_id", "values", "timestamps_ms", "weights", "relative")
        )
    )


def compact_ids(ids: Int64Array, id_count: int) -> tuple[Int64Array, Int64Array]:
    """``(distinct, index)``: the distinct ``ids`` (each in ``[0, id_count)``) in an order that
    carries no meaning, and each row's position among them; O(rows), with no sort and no pass
    over all ``id_count`` ids (a scratch table is written only where rows point)."""
    rows = ids.shape[0]
    slot = np.empty(id_count, dtype=np.int64)
    slot[ids] = np.arange(rows, dtype=np.int64)
    winner = slot[ids]  # the last row of each id
    is_winner = np.zeros(rows, dtype=np.bool_)
    is_winner[winner] = True
    group = np.cumsum(is_winner, dtype=np.int64) - 1
    return ids[is_winner], group[winner]


def kind_batch(
    columns: Columns, names: npt.NDArray[np.object_], key_space: object
) -> KindBatch | None:
    """The batch of these rows, with only the keys they use (``names`` indexed by key id, the
    key catalogue's strings passed on as they are, with their ids in the numbering
    ``key_space``); None when there are no rows."""
    if columns.line.shape[0] == 0:
        return None
    distinct, key_index = compact_ids(columns.key_id, names.shape[0])
    return KindBatch(
        key_names=names[distinct].tolist(),
        key_index=key_index,
        values=columns.values,
        timestamps_ms=columns.timestamps_ms,
        weights=columns.weights,
        relative=columns.relative,
        key_ids=distinct,
        key_space=key_space,
    )
