"""Screening of one ingest batch before it touches state: shapes, validity and slice positions.

Everything here is cheap on the common path: validity and the slice span are read from a few
min/max reductions, and masks are built only when something is actually wrong (None means "all").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from crdtstream.window.apply import Batch
from crdtstream.window.kinds.orset import Item
from crdtstream.window.windows import TIMESTAMP_MS_LIMIT, Windows

__all__ = ["Screened", "and_masks", "is_identity", "screen"]

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Payload = npt.NDArray[np.float64] | npt.NDArray[np.uint64] | Sequence[Item]
_FLOAT_KINDS = frozenset({"counter", "gauge", "distribution", "max", "min"})
_Number = TypeVar("_Number", np.int64, np.uint64, np.float64)


@dataclass(slots=True)
class Screened:
    """A batch converted to arrays, with what the store needs to judge it."""

    index: Int64Array
    payload: Payload
    timestamps_ms: Int64Array
    weights: npt.NDArray[np.float64] | None
    relative: BoolArray | None
    stamp_range: tuple[int, int]
    value_range: tuple[float, float]
    valid: BoolArray | None
    position_range: tuple[int, int]
    positions: Int64Array

    def batch(self, keys: Int64Array, accepted: BoolArray | None) -> Batch:
        """The accepted events as a :class:`Batch` (key count filled in by the store)."""
        batch = Batch(
            keys,
            self.positions,
            self.payload,
            self.timestamps_ms,
            self.weights,
            self.relative,
            0,
        )
        if accepted is not None:
            return batch.take(accepted)
        batch.position_range = self.position_range
        batch.value_min = self.value_range[0]
        return batch


def screen(
    kind: str,
    name_count: int,
    key_index: npt.ArrayLike,
    values: npt.ArrayLike | Sequence[Item],
    timestamps_ms: npt.ArrayLike,
    weights: npt.ArrayLike | None,
    relative: npt.ArrayLike | None,
    windows: Windows,
) -> Screened:
    """Convert and check one batch; programming errors (shapes, indices) raise ValueError."""
    index = np.asarray(key_index, dtype=np.int64)
    stamps = np.asarray(timestamps_ms, dtype=np.int64)
    payload = _payload(kind, values)
    weight_array = None if weights is None else np.asarray(weights, dtype=np.float64)
    relative_array = None if relative is None else np.asarray(relative, dtype=np.bool_)
    _check_lengths(len(index), stamps, payload, weight_array, relative_array)
    # Viewed as unsigned, a negative index is huge: one reduction checks both bounds.
    unsigned = index.view(np.uint64)
    if len(index) and int(unsigned[0] if len(index) == 1 else unsigned.max()) >= name_count:
        raise ValueError("key_index points outside key_names")
    stamp_range = (0, 0)
    if len(stamps):
        low, high = _extremes(stamps)
        stamp_range = (int(low), int(high))
    value_range = _value_range(kind, payload)
    valid = _valid(kind, payload, stamps, stamp_range, value_range, weight_array)
    slide = windows.slide_ms
    position_range = (stamp_range[0] // slide, stamp_range[1] // slide)
    positions = (
        np.broadcast_to(np.int64(position_range[0]), stamps.shape)
        if position_range[0] == position_range[1] and len(stamps) > 1
        else np.floor_divide(stamps, slide)
    )
    return Screened(
        index,
        payload,
        stamps,
        weight_array,
        relative_array,
        stamp_range,
        value_range,
        valid,
        position_range,
        positions,
    )


def _payload(
    kind: str, values: npt.ArrayLike | Sequence[Item]
) -> npt.NDArray[np.float64] | npt.NDArray[np.uint64] | Sequence[Item]:
    if kind == "set":
        return values  # type: ignore[return-value]
    if kind == "distinct":
        return np.asarray(values, dtype=np.uint64)
    return np.asarray(values, dtype=np.float64)


def _check_lengths(count: int, *arrays: object) -> None:
    for array in arrays:
        if array is not None and len(array) != count:  # type: ignore[arg-type]
            raise ValueError(f"every per-event array must have length {count}")


def _value_range(kind: str, payload: object) -> tuple[float, float]:
    """Min and max of float payloads: they propagate NaN and show infinities, so two reductions
    tell whether every value is finite without building a mask."""
    if kind not in _FLOAT_KINDS or not len(payload):  # type: ignore[arg-type]
        return 0.0, 0.0
    values: npt.NDArray[np.float64] = payload  # type: ignore[assignment]
    low, high = _extremes(values)
    return float(low), float(high)


def _extremes(values: npt.NDArray[_Number]) -> tuple[_Number, _Number]:
    """Min and max of a non-empty array; one event (a single write) is read without the two
    reductions, which cost more than everything else done with it. NaN propagates either way."""
    if len(values) == 1:
        value: _Number = values[0]
        return value, value
    return values.min(), values.max()


def _valid(
    kind: str,
    payload: object,
    stamps: Int64Array,
    stamp_range: tuple[int, int],
    value_range: tuple[float, float],
    weights: npt.NDArray[np.float64] | None,
) -> npt.NDArray[np.bool_] | None:
    """Which events are well formed; None when all are (the common case, checked cheaply)."""
    valid: npt.NDArray[np.bool_] | None = None
    if stamp_range[0] <= -TIMESTAMP_MS_LIMIT or stamp_range[1] >= TIMESTAMP_MS_LIMIT:
        valid = (stamps > -TIMESTAMP_MS_LIMIT) & (stamps < TIMESTAMP_MS_LIMIT)
    if kind in _FLOAT_KINDS and not (
        math.isfinite(value_range[0]) and math.isfinite(value_range[1])
    ):
        valid = and_masks(valid, np.isfinite(payload))  # type: ignore[call-overload]
    if kind == "set":
        typed = np.fromiter(
            (isinstance(item, str | bytes) for item in payload),  # type: ignore[attr-defined]
            dtype=np.bool_,
            count=len(stamps),
        )
        valid = and_masks(valid, None if typed.all() else typed)
    if weights is not None and kind == "distribution":
        good = np.isfinite(weights) & (weights > 0)
        valid = and_masks(valid, None if good.all() else good)
    return valid


def and_masks(
    left: npt.NDArray[np.bool_] | None, right: npt.NDArray[np.bool_] | None
) -> npt.NDArray[np.bool_] | None:
    """Conjunction of optional masks, where None means all true."""
    if left is None:
        return right
    if right is None:
        return left
    return left & right


def is_identity(name_ids: Int64Array) -> bool:
    """True when the batch's names map to kind-local ids 0..N-1, so no gather is needed."""
    if len(name_ids) == 1:
        return bool(name_ids[0] == 0)
    return bool((name_ids == np.arange(len(name_ids))).all())
