"""Distribution: a mergeable quantile sketch with count, sum, min and max.

Values go into DDSketch-style logarithmic buckets (:class:`~crdtstream.crdt.mapping.LogMapping`):
positive values by key, negative values by the key of their magnitude in a second store, zeros
in a zero count. A quantile is then within ``relative_accuracy`` of the true one.

Why per-replica slots. Bucket counts of different replicas must be *added* for a read, but a
join that adds is not idempotent: a delta delivered twice would count twice. So every replica
writes only its own slot, and each part of a slot only grows over that replica's (linear)
history: bucket counts, the zero count, the sum of positive values and the sum of the
*magnitudes* of negative values (a single signed sum would go up and down), the minimum (only
goes down) and the maximum (only goes up). Two states of one slot therefore join by the
element-wise maximum (minimum for ``min``), which is idempotent, commutative and associative;
reads add the slots up. A delta is the writer's slot restricted to the buckets it touched.
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from crdtstream import wire
from crdtstream.crdt.base import (
    Crdt,
    expect_float,
    expect_int,
    expect_list,
    expect_str,
    validate_replica,
)
from crdtstream.crdt.buckets import Buckets
from crdtstream.crdt.mapping import LogMapping
from crdtstream.errors import MergeError

__all__ = ["Distribution"]

RELATIVE_ACCURACY_MIN = 0.001
RELATIVE_ACCURACY_MAX = 0.5

# Natural logarithms of the largest finite double and of the smallest subnormal, with a margin:
# no finite value maps to a key outside this many log-gamma steps.
_LOG_RANGE = 750.0


class _Slot:
    """One replica's monotone contribution."""

    __slots__ = (
        "maximum",
        "minimum",
        "negative",
        "negative_sum",
        "positive",
        "positive_sum",
        "zero_count",
    )

    def __init__(self) -> None:
        self.zero_count = 0
        self.positive_sum = 0.0
        self.negative_sum = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf
        self.positive = Buckets()
        self.negative = Buckets()

    def count(self) -> int:
        return self.zero_count + self.positive.total() + self.negative.total()

    def is_bottom(self) -> bool:
        """True for the slot of a replica that never added anything (the join's identity)."""
        return self.count() == 0 and self.canonical()[1:5] == (0.0, 0.0, math.inf, -math.inf)

    def join(self, other: _Slot) -> None:
        self.zero_count = max(self.zero_count, other.zero_count)
        self.positive_sum = max(self.positive_sum, other.positive_sum)
        self.negative_sum = max(self.negative_sum, other.negative_sum)
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        self.positive.join_max(other.positive)
        self.negative.join_max(other.negative)

    def copy(self) -> _Slot:
        slot = self.scalars_copy()
        slot.positive = Buckets(self.positive.offset, self.positive.counts.copy())
        slot.negative = Buckets(self.negative.offset, self.negative.counts.copy())
        return slot

    def scalars_copy(self) -> _Slot:
        """A copy of everything but the buckets (a delta then adds the touched buckets)."""
        slot = _Slot()
        slot.zero_count, slot.minimum, slot.maximum = self.zero_count, self.minimum, self.maximum
        slot.positive_sum, slot.negative_sum = self.positive_sum, self.negative_sum
        return slot

    def canonical(self) -> tuple[Any, ...]:
        positive, negative = self.positive.trimmed(), self.negative.trimmed()
        return (
            self.zero_count,
            self.positive_sum,
            self.negative_sum,
            self.minimum,
            self.maximum,
            (positive.offset, positive.counts.tobytes()),
            (negative.offset, negative.counts.tobytes()),
        )

    def body(self) -> list[Any]:
        positive, negative = self.positive.trimmed(), self.negative.trimmed()
        return [
            self.zero_count,
            self.positive_sum,
            self.negative_sum,
            self.minimum,
            self.maximum,
            positive.offset,
            positive.counts,
            negative.offset,
            negative.counts,
        ]

    @classmethod
    def from_body(cls, body: Any, key_limit: int) -> _Slot:
        fields = expect_list(body, 9)
        slot = cls()
        slot.zero_count = expect_int(fields[0], 0)
        slot.positive_sum = expect_float(fields[1], allow_infinite=True)
        slot.negative_sum = expect_float(fields[2], allow_infinite=True)
        slot.minimum = expect_float(fields[3], allow_infinite=True)
        slot.maximum = expect_float(fields[4], allow_infinite=True)
        slot.positive = _buckets_from_body(fields[5], fields[6], key_limit)
        slot.negative = _buckets_from_body(fields[7], fields[8], key_limit)
        if min(slot.positive_sum, slot.negative_sum) < 0:
            raise ValueError("sums of magnitudes must be >= 0")
        if slot.count() and not (math.isfinite(slot.minimum) and slot.minimum <= slot.maximum):
            raise ValueError("a slot with observations needs a finite min <= max")
        return slot


def _buckets_from_body(offset: Any, counts: Any, key_limit: int) -> Buckets:
    expect_int(offset)
    if not (isinstance(counts, np.ndarray) and counts.dtype == np.int64 and counts.ndim == 1):
        raise TypeError("bucket counts must be a one-dimensional int64 array")
    if not (-key_limit <= offset and offset + len(counts) <= key_limit):
        raise ValueError(f"bucket keys outside [-{key_limit}, {key_limit}]")
    if len(counts) and int(counts.min()) < 0:
        raise ValueError("bucket counts must be >= 0")
    return Buckets(offset, counts.copy())


def _validate_relative_accuracy(relative_accuracy: float) -> float:
    if isinstance(relative_accuracy, bool) or not isinstance(relative_accuracy, float | int):
        raise TypeError("relative_accuracy must be a float")
    if not RELATIVE_ACCURACY_MIN <= relative_accuracy <= RELATIVE_ACCURACY_MAX:
        raise ValueError(
            f"relative_accuracy must be in [{RELATIVE_ACCURACY_MIN}, {RELATIVE_ACCURACY_MAX}],"
            f" got {relative_accuracy}"
        )
    return float(relative_accuracy)


class Distribution(Crdt):
    """Quantiles, count, sum, min and max of observed values, mergeable across replicas.

    ``add(x, count=1)`` and the vectorised ``add_many(values)`` accept any finite float (NaN and
    infinities raise ``ValueError``). ``quantile(q)`` is within ``relative_accuracy`` of the
    true (lower) quantile, for values of either sign. Memory per replica grows with the
    logarithm of the value range (one int64 per bucket between the smallest and largest key).
    """

    TAG = wire.Tag.DISTRIBUTION
    __slots__ = ("_slots", "mapping", "relative_accuracy", "replica")

    def __init__(self, replica: str, relative_accuracy: float = 0.01) -> None:
        self.replica = validate_replica(replica)
        self.relative_accuracy = _validate_relative_accuracy(relative_accuracy)
        self.mapping = LogMapping(self.relative_accuracy)
        self._slots: dict[str, _Slot] = {}

    def _own_slot(self) -> _Slot:
        slot = self._slots.get(self.replica)
        if slot is None:
            slot = self._slots[self.replica] = _Slot()
        return slot

    def add(self, x: float, count: int = 1) -> Distribution:
        """Add ``count`` observations of ``x``; returns the delta."""
        number = float(x)
        if not math.isfinite(number):
            raise ValueError(f"distribution values must be finite, got {x!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an int >= 1, got {count!r}")
        slot = self._own_slot()
        slot.minimum, slot.maximum = min(slot.minimum, number), max(slot.maximum, number)
        if number > 0:
            touched = slot.positive.add_one(self.mapping.key(number), count)
            slot.positive_sum += number * count
        elif number < 0:
            touched = slot.negative.add_one(self.mapping.key(-number), count)
            slot.negative_sum += -number * count
        else:
            slot.zero_count += count
        delta_slot = slot.scalars_copy()
        if number > 0:
            delta_slot.positive = touched
        elif number < 0:
            delta_slot.negative = touched
        return self._delta(delta_slot)

    def add_many(self, values: npt.ArrayLike) -> Distribution:
        """Add every value of a float array (or sequence), vectorised; returns the delta."""
        array = np.asarray(values, dtype=np.float64).ravel()
        if not bool(np.isfinite(array).all()):
            raise ValueError("distribution values must be finite (the batch has NaN or inf)")
        if not len(array):
            return self._delta(_Slot())
        slot = self._own_slot()
        delta_slot = _Slot()
        slot.minimum = min(slot.minimum, float(array.min()))
        slot.maximum = max(slot.maximum, float(array.max()))
        positive, negative = array[array > 0], -array[array < 0]
        slot.zero_count += len(array) - len(positive) - len(negative)
        slot.positive_sum += float(positive.sum())
        slot.negative_sum += float(negative.sum())
        delta_slot.positive = self._add_magnitudes(slot.positive, positive)
        delta_slot.negative = self._add_magnitudes(slot.negative, negative)
        scalars = slot.scalars_copy()
        delta_slot.join(scalars)
        return self._delta(delta_slot)

    def _add_magnitudes(self, buckets: Buckets, magnitudes: npt.NDArray[np.float64]) -> Buckets:
        """Count the magnitudes into ``buckets``; return the touched range after the change."""
        if not len(magnitudes):
            return Buckets()
        keys = self.mapping.keys(magnitudes)
        buckets.add_keys(keys, np.ones(len(keys), dtype=np.int64))
        return buckets.slice(int(keys.min()), int(keys.max()) + 1)

    def _delta(self, slot: _Slot) -> Distribution:
        # Built without __init__: the parameters are already validated and the mapping is shared.
        delta = object.__new__(Distribution)
        delta.replica, delta.relative_accuracy, delta.mapping = (
            self.replica,
            self.relative_accuracy,
            self.mapping,
        )
        delta._slots = {self.replica: slot}
        return delta

    def merge(self, other: Self) -> None:
        """Join slot by slot; relative accuracies must match (``MergeError`` otherwise)."""
        self._check_mergeable(other)
        if other.relative_accuracy != self.relative_accuracy:
            raise MergeError(
                f"cannot merge Distribution relative_accuracy {other.relative_accuracy}"
                f" into {self.relative_accuracy}"
            )
        for replica, theirs in other._slots.items():
            mine = self._slots.get(replica)
            if mine is None:
                mine = self._slots[replica] = _Slot()
            mine.join(theirs)

    @property
    def count(self) -> int:
        """The number of observations."""
        return sum(slot.count() for slot in self._slots.values())

    @property
    def sum(self) -> float:
        """The sum of the observations."""
        positive = math.fsum(slot.positive_sum for slot in self._slots.values())
        negative = math.fsum(slot.negative_sum for slot in self._slots.values())
        return positive - negative

    @property
    def min(self) -> float | None:
        """The smallest observation, or None when empty."""
        smallest = min((slot.minimum for slot in self._slots.values()), default=math.inf)
        return None if smallest == math.inf else smallest

    @property
    def max(self) -> float | None:
        """The largest observation, or None when empty."""
        largest = max((slot.maximum for slot in self._slots.values()), default=-math.inf)
        return None if largest == -math.inf else largest

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (0 <= q <= 1; lower quantile), or None when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile q must be in [0, 1], got {q!r}")
        positive, negative, zero_count = Buckets(), Buckets(), 0
        for slot in self._slots.values():
            positive.add_all(slot.positive)
            negative.add_all(slot.negative)
            zero_count += slot.zero_count
        negative_count = negative.total()
        total = negative_count + zero_count + positive.total()
        if total == 0:
            return None
        rank = q * (total - 1)
        if rank < negative_count:
            estimate = -self.mapping.value(negative.key_at_rank(rank, descending=True))
        elif rank < negative_count + zero_count:
            estimate = 0.0
        else:
            key = positive.key_at_rank(rank - negative_count - zero_count)
            estimate = self.mapping.value(key)
        # The true quantile lies within [min, max], so clamping only moves the estimate closer.
        lowest, highest = self.min, self.max
        assert lowest is not None
        assert highest is not None
        return min(max(estimate, lowest), highest)

    @property
    def value(self) -> dict[str, float | int | None]:
        """A summary: ``count``, ``sum``, ``min``, ``max``, ``p50``, ``p90``, ``p99``."""
        return {
            "count": self.count,
            "sum": self.sum,
            "min": self.min,
            "max": self.max,
            "p50": self.quantile(0.5),
            "p90": self.quantile(0.9),
            "p99": self.quantile(0.99),
        }

    def copy(self) -> Self:
        """An independent copy."""
        distribution = type(self)(self.replica, self.relative_accuracy)
        distribution._slots = {replica: slot.copy() for replica, slot in self._slots.items()}
        return distribution

    def _key_limit(self) -> int:
        return math.ceil(_LOG_RANGE / math.log(self.mapping.gamma))

    def _state(self) -> Any:
        slots = {replica: slot.canonical() for replica, slot in self._slots.items() if slot.count()}
        return (self.relative_accuracy, slots)

    def _body(self) -> Any:
        slots = [
            [replica, *slot.body()]
            for replica, slot in sorted(self._slots.items())
            if not slot.is_bottom()
        ]
        return [self.relative_accuracy, slots]

    @classmethod
    def _from_body(cls, replica: str, body: Any) -> Self:
        relative_accuracy, slots = expect_list(body, 2)
        distribution = cls(replica, expect_float(relative_accuracy))
        key_limit = distribution._key_limit()
        for entry in expect_list(slots):
            fields = expect_list(entry, 10)
            slot = _Slot.from_body(fields[1:], key_limit)
            if not slot.is_bottom():
                distribution._slots[validate_replica(expect_str(fields[0]))] = slot
        return distribution
