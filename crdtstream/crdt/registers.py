"""Registers: :class:`LWWRegister` (last writer wins), :class:`MaxRegister`, :class:`MinRegister`.

The last-writer-wins order is ``(timestamp_ms, replica, sequence)``: a later timestamp wins, a
tie goes to the larger replica name (deterministic on every node), and ``sequence`` orders two
writes one replica makes within the same millisecond, so its later write wins.
"""

from __future__ import annotations

import math
from typing import Any, Self

from crdtstream import wire
from crdtstream.crdt.base import (
    Crdt,
    expect_float,
    expect_int,
    expect_list,
    expect_str,
    validate_replica,
)

__all__ = ["LWWRegister", "MaxRegister", "MinRegister"]

_Write = tuple[int, str, int, Any]
_PLAIN_DEPTH_MAX = 32


def _check_plain(value: Any, depth: int = 0) -> Any:
    """Return ``value`` if it is a plain codec value; raise TypeError otherwise.

    Registers compare states with ``==``, which must give a plain bool: numpy arrays (which the
    codec can carry) and other objects are refused, also when they arrive nested in a frame.
    """
    if depth > _PLAIN_DEPTH_MAX:
        raise TypeError("register value nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item, depth + 1)
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"register map keys must be strings, got {type(key).__name__}")
            _check_plain(item, depth + 1)
        return value
    raise TypeError(f"a register cannot hold a {type(value).__name__}")


class LWWRegister(Crdt):
    """A last-writer-wins register: ``set(value, timestamp_ms)``; ``value`` (None when unset).

    ``value`` may be anything the codec carries (None, bool, int, float, str, bytes, and lists
    or string-keyed maps of those); tuples come back from the wire as lists.
    """

    TAG = wire.Tag.LWW_REGISTER
    __slots__ = ("_write", "replica")

    def __init__(self, replica: str) -> None:
        self.replica = validate_replica(replica)
        self._write: _Write | None = None

    def set(self, value: Any, timestamp_ms: int) -> LWWRegister:
        """Write ``value`` at ``timestamp_ms``; an older write than the current one loses.

        Returns the delta: a register holding this write.
        """
        expect_int(timestamp_ms)
        _check_plain(value)  # fail here, not at the next send or merge
        sequence = 0
        current = self._write
        if current is not None and current[0] == timestamp_ms and current[1] == self.replica:
            sequence = current[2] + 1
        write: _Write = (timestamp_ms, self.replica, sequence, value)
        self._offer(write)
        delta = LWWRegister(self.replica)
        delta._write = write
        return delta

    def _offer(self, write: _Write) -> None:
        if self._write is None or write[:3] > self._write[:3]:
            self._write = write

    def merge(self, other: Self) -> None:
        """Keep the write with the larger ``(timestamp_ms, replica, sequence)``."""
        self._check_mergeable(other)
        if other._write is not None:
            self._offer(other._write)

    @property
    def value(self) -> Any:
        """The winning value, or None when never set."""
        return None if self._write is None else self._write[3]

    @property
    def timestamp_ms(self) -> int | None:
        """The winning write's timestamp, or None when never set."""
        return None if self._write is None else self._write[0]

    def _state(self) -> Any:
        return self._write

    def _body(self) -> Any:
        return None if self._write is None else list(self._write)

    @classmethod
    def _from_body(cls, replica: str, body: Any) -> Self:
        register = cls(replica)
        if body is not None:
            timestamp_ms, writer, sequence, value = expect_list(body, 4)
            register._write = (
                expect_int(timestamp_ms),
                validate_replica(expect_str(writer)),
                expect_int(sequence, 0),
                _check_plain(value),
            )
        return register


class _ExtremumRegister(Crdt):
    """Shared body of the max and min registers: one float, joined by max or min."""

    __slots__ = ("_value", "replica")
    _PREFER_LARGER: bool

    def __init__(self, replica: str) -> None:
        self.replica = validate_replica(replica)
        self._value: float | None = None

    def _offer(self, x: float) -> None:
        if (
            self._value is None
            or (self._PREFER_LARGER and x > self._value)
            or (not self._PREFER_LARGER and x < self._value)
        ):
            self._value = x

    def observe(self, x: float) -> Self:
        """Observe ``x`` (NaN refused); returns the delta: a register holding ``x``."""
        number = float(x)
        if math.isnan(number):
            raise ValueError("cannot observe NaN")
        self._offer(number)
        delta = type(self)(self.replica)
        delta._value = number
        return delta

    def merge(self, other: Self) -> None:
        """Keep the extremum."""
        self._check_mergeable(other)
        if other._value is not None:
            self._offer(other._value)

    @property
    def value(self) -> float | None:
        """The extremum observed, or None when nothing was observed."""
        return self._value

    def _state(self) -> Any:
        return self._value

    def _body(self) -> Any:
        return self._value

    @classmethod
    def _from_body(cls, replica: str, body: Any) -> Self:
        register = cls(replica)
        if body is not None:
            register._value = expect_float(body, allow_infinite=True)
        return register


class MaxRegister(_ExtremumRegister):
    """The largest value observed: ``observe(x)``; ``value`` (None when empty)."""

    TAG = wire.Tag.MAX_REGISTER
    __slots__ = ()
    _PREFER_LARGER = True


class MinRegister(_ExtremumRegister):
    """The smallest value observed: ``observe(x)``; ``value`` (None when empty)."""

    TAG = wire.Tag.MIN_REGISTER
    __slots__ = ()
    _PREFER_LARGER = False
