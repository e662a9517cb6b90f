"""Counters: :class:`GCounter` (grow-only) and :class:`PNCounter` (increments and decrements).

Each replica owns one slot holding its running total; merge keeps the larger total per slot, so
duplicated or reordered deltas never count twice. A delta is the writer's own slot after the
change, which is why counter deltas need no causal delivery.
"""

from __future__ import annotations

from typing import Any, Self

from crdtstream import wire
from crdtstream.crdt.base import Crdt, expect_int, expect_list, expect_str, validate_replica

__all__ = ["GCounter", "PNCounter"]


def _join_slots(into: dict[str, int], other: dict[str, int]) -> None:
    for replica, total in other.items():
        if total > into.get(replica, 0):
            into[replica] = total


def _slots_from_body(body: Any) -> dict[str, int]:
    if not isinstance(body, dict):
        raise TypeError(f"expected a map of replica totals, got {type(body).__name__}")
    slots = {expect_str(replica): expect_int(total, 0) for replica, total in body.items()}
    # Zero totals are the same as absent slots; dropping them keeps equality canonical.
    return {replica: total for replica, total in slots.items() if total}


def _check_increment(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"counter increments must be int, got {type(n).__name__}")
    return n


class GCounter(Crdt):
    """A grow-only counter: ``add(n)`` with ``n >= 0``; ``value`` is the total."""

    TAG = wire.Tag.G_COUNTER
    __slots__ = ("_totals", "replica")

    def __init__(self, replica: str) -> None:
        self.replica = validate_replica(replica)
        self._totals: dict[str, int] = {}

    def add(self, n: int) -> GCounter:
        """Add ``n >= 0``; returns the delta (this replica's new total)."""
        if _check_increment(n) < 0:
            raise ValueError(f"GCounter.add needs n >= 0, got {n}")
        delta = GCounter(self.replica)
        total = self._totals.get(self.replica, 0) + n
        if total:
            self._totals[self.replica] = total
            delta._totals[self.replica] = total
        return delta

    def merge(self, other: Self) -> None:
        """Keep the larger total of every replica slot."""
        self._check_mergeable(other)
        _join_slots(self._totals, other._totals)

    @property
    def value(self) -> int:
        """The sum of every replica's total."""
        return sum(self._totals.values())

    def copy(self) -> Self:
        """An independent copy."""
        counter = type(self)(self.replica)
        counter._totals = dict(self._totals)
        return counter

    def _state(self) -> Any:
        return self._totals

    def _body(self) -> Any:
        return dict(sorted(self._totals.items()))

    @classmethod
    def _from_body(cls, replica: str, body: Any) -> Self:
        counter = cls(replica)
        counter._totals = _slots_from_body(body)
        return counter


class PNCounter(Crdt):
    """A counter that goes both ways: ``add(n)`` for any int ``n``; ``value`` is the total.

    Two grow-only slot maps, one for increments and one for (the magnitude of) decrements.
    """

    TAG = wire.Tag.PN_COUNTER
    __slots__ = ("_decrements", "_increments", "replica")

    def __init__(self, replica: str) -> None:
        self.replica = validate_replica(replica)
        self._increments: dict[str, int] = {}
        self._decrements: dict[str, int] = {}

    def add(self, n: int) -> PNCounter:
        """Add ``n`` (negative to subtract); returns the delta (the slot that changed)."""
        _check_increment(n)
        delta = PNCounter(self.replica)
        if n == 0:
            return delta
        own, delta_own = (
            (self._increments, delta._increments)
            if n > 0
            else (self._decrements, delta._decrements)
        )
        total = own.get(self.replica, 0) + abs(n)
        own[self.replica] = total
        delta_own[self.replica] = total
        return delta

    def merge(self, other: Self) -> None:
        """Join both slot maps."""
        self._check_mergeable(other)
        _join_slots(self._increments, other._increments)
        _join_slots(self._decrements, other._decrements)

    @property
    def value(self) -> int:
        """Increments minus decrements over every replica."""
        return sum(self._increments.values()) - sum(self._decrements.values())

    def copy(self) -> Self:
        """An independent copy."""
        counter = type(self)(self.replica)
        counter._increments = dict(self._increments)
        counter._decrements = dict(self._decrements)
        return counter

    def _state(self) -> Any:
        return (self._increments, self._decrements)

    def _body(self) -> Any:
        return [dict(sorted(self._increments.items())), dict(sorted(self._decrements.items()))]

    @classmethod
    def _from_body(cls, replica: str, body: Any) -> Self:
        increments, decrements = expect_list(body, 2)
        counter = cls(replica)
        counter._increments = _slots_from_body(increments)
        counter._decrements = _slots_from_body(decrements)
        return counter
