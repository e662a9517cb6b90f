"""The one small interface every CRDT type obeys, and the checks they share.

Every type ``T``:

- is built as ``T(replica, **params)``; ``replica`` names the slot this object writes;
- has mutators that change the object in place **and return the delta** as a ``T`` (if the return
  value is ignored, the type is a plain state-based CRDT);
- joins another state of the same type and parameters with ``merge`` (commutative, associative,
  idempotent); different parameters raise :class:`~crdtstream.errors.MergeError`;
- exposes ``value``, ``copy()``, state equality ``==`` (the replica name is not part of the
  state), and ``to_bytes()`` / ``T.from_bytes(data)`` through :mod:`crdtstream.wire`, where any
  malformed input raises :class:`~crdtstream.errors.DecodeError` only. Encodings are canonical:
  equal states with the same replica name give identical bytes, so bytes can be digested.
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar, Self

from crdtstream import wire
from crdtstream.errors import MergeError

__all__ = [
    "Crdt",
    "Item",
    "expect_float",
    "expect_int",
    "expect_list",
    "expect_str",
    "item_order",
    "validate_item",
    "validate_replica",
]

Item = str | bytes | int
"""An element of a set type: hashable and carried by the codec unchanged."""

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def validate_replica(replica: object) -> str:
    """Return ``replica`` when it is a non-empty ``str``, else raise."""
    if not isinstance(replica, str):
        raise TypeError(f"replica must be a str, got {type(replica).__name__}")
    if not replica:
        raise ValueError("replica must be a non-empty str")
    return replica


def validate_item(item: object) -> Item:
    """Return ``item`` when it is a ``str``, ``bytes`` or 64-bit ``int`` (not ``bool``)."""
    if isinstance(item, bool) or not isinstance(item, str | bytes | int):
        raise TypeError(f"set items must be str, bytes or int, got {type(item).__name__}")
    if isinstance(item, int) and not _INT_MIN <= item <= _INT_MAX:
        raise ValueError(f"integer item {item} does not fit in 64 bits")
    return item


def item_order(item: Item) -> tuple[int, Any]:
    """A total order over mixed items (ints, then bytes, then str) for canonical encodings."""
    if isinstance(item, int):
        return (0, item)
    return (1, item) if isinstance(item, bytes) else (2, item)


def expect_list(body: Any, length: int | None = None) -> list[Any]:
    """``body`` as a list (of ``length`` items when given); raises ValueError otherwise."""
    if not isinstance(body, list):
        raise TypeError(f"expected a list, got {type(body).__name__}")
    if length is not None and len(body) != length:
        raise ValueError(f"expected {length} fields, got {len(body)}")
    return body


def expect_int(value: Any, minimum: int | None = None) -> int:
    """``value`` as an int (not bool), at least ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"expected an int >= {minimum}, got {value}")
    return value


def expect_float(value: Any, *, allow_infinite: bool = False) -> float:
    """``value`` as a float (ints accepted); never NaN, infinite only when allowed."""
    if isinstance(value, bool) or not isinstance(value, float | int):
        raise TypeError(f"expected a float, got {type(value).__name__}")
    number = float(value)
    if math.isnan(number) or (math.isinf(number) and not allow_infinite):
        raise ValueError(f"expected a finite float, got {number}")
    return number


def expect_str(value: Any) -> str:
    """``value`` as a str."""
    if not isinstance(value, str):
        raise TypeError(f"expected a str, got {type(value).__name__}")
    return value


class Crdt(abc.ABC):
    """Base of every CRDT type: codec plumbing, equality and copy on top of four hooks."""

    TAG: ClassVar[wire.Tag]
    replica: str

    @abc.abstractmethod
    def merge(self, other: Self) -> None:
        """Join ``other`` into this state in place."""

    @property
    @abc.abstractmethod
    def value(self) -> Any:
        """The current value, as users read it."""

    @abc.abstractmethod
    def _state(self) -> Any:
        """A comparable, canonical snapshot of the state (no replica name)."""

    @abc.abstractmethod
    def _body(self) -> Any:
        """The state as codec-friendly values (lists, dicts, numbers, numpy arrays)."""

    @classmethod
    @abc.abstractmethod
    def _from_body(cls, replica: str, body: Any) -> Self:
        """Rebuild from :meth:`_body`; raises ValueError/TypeError on a malformed body."""

    def copy(self) -> Self:
        """An independent copy with the same replica name and state."""
        return self._from_body(self.replica, self._body())

    def to_bytes(self) -> bytes:
        """The state as one :mod:`crdtstream.wire` frame."""
        return wire.encode(self.TAG, [self.replica, self._body()])

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode :meth:`to_bytes` output; anything malformed raises ``DecodeError``."""
        return wire.decode_as(data, cls.TAG, cls._build)

    @classmethod
    def _build(cls, frame_body: Any) -> Self:
        replica, body = expect_list(frame_body, 2)
        return cls._from_body(validate_replica(replica), body)

    def _check_mergeable(self, other: object) -> None:
        if type(other) is not type(self):
            raise MergeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Crdt)
        return bool(self._state() == other._state())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(replica={self.replica!r}, value={self.value!r})"
