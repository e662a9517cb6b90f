"""Commands of the replicated state machine and their results, as they travel and sit in the log.

A command names a key, its kind, an operation and the event's ``timestamp_ms``; it carries the
client's ``(client_id, sequence)`` so that a retry is applied at most once. Both commands and
results go through :mod:`crdtstream.wire`; a decoder raises
:class:`~crdtstream.errors.DecodeError` and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from crdtstream import wire

__all__ = [
    "KINDS",
    "OPERATIONS",
    "TEXT_KINDS",
    "Command",
    "Result",
    "check_count",
    "check_value",
    "decode_command",
    "decode_result",
    "encode_command",
    "encode_result",
    "result_body",
    "result_from",
]

OPERATIONS: dict[str, frozenset[str]] = {
    "counter": frozenset({"add", "conditional_add", "read"}),
    "gauge": frozenset({"set", "read"}),
    "set": frozenset({"add", "remove", "read"}),
    "distinct": frozenset({"add", "read"}),
    "distribution": frozenset({"observe", "read"}),
    "max": frozenset({"observe", "read"}),
    "min": frozenset({"observe", "read"}),
}
"""The operations each kind accepts; every kind also answers ``read`` through the log."""

KINDS = tuple(OPERATIONS)
TEXT_KINDS = frozenset({"set", "distinct"})

Number = int | float


@dataclass(frozen=True, slots=True)
class Command:
    """One client command; ``value`` is a number, or a string for ``set`` and ``distinct``."""

    client_id: str
    sequence: int
    key: str
    kind: str
    operation: str
    value: Number | str = 0
    timestamp_ms: int = 0
    limit: Number | None = None

    def __post_init__(self) -> None:
        if self.kind not in OPERATIONS:
            raise ValueError(f"unknown kind {self.kind!r}; expected one of {KINDS}")
        if self.operation not in OPERATIONS[self.kind]:
            raise ValueError(f"kind {self.kind} has no operation {self.operation!r}")
        if not self.client_id or not self.key:
            raise ValueError("client_id and key must not be empty")
        check_count(self.sequence, "sequence")
        check_count(self.timestamp_ms, "timestamp_ms")
        if self.operation != "read":
            check_value(self.kind, self.value)
        if (self.operation == "conditional_add") != (self.limit is not None):
            raise ValueError("a limit is required by conditional_add and only by it")
        if self.limit is not None:
            check_value("counter", self.limit)


INT_MAX = (1 << 63) - 1
"""Integers travel as msgpack int64: anything beyond would not encode in a snapshot or answer."""


def check_count(value: object, name: str) -> None:
    """Refuse anything but a non-negative integer that the codec carries."""
    if type(value) is not int or not 0 <= value <= INT_MAX:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {value!r}")


def check_value(kind: str, value: object) -> None:
    """Refuse a value the kind cannot hold: strings for sets, finite numbers otherwise."""
    if kind in TEXT_KINDS:
        if not isinstance(value, str):
            raise TypeError(f"{kind} values must be strings, got {value!r}")
    elif type(value) is int:
        if not -INT_MAX <= value <= INT_MAX:
            raise ValueError(f"{kind} integers must lie within +-(2**63 - 1), got {value!r}")
    elif type(value) is not float or not math.isfinite(value):
        raise ValueError(f"{kind} values must be finite numbers, got {value!r}")


@dataclass(frozen=True, slots=True)
class Result:
    """What applying a command gave: ``applied`` is False for a refused conditional add and for
    errors; ``value`` is the key's value in the newest window the command touched.
    """

    ok: bool
    applied: bool = False
    value: Any = None
    error: str = ""


def encode_command(command: Command) -> bytes:
    """The wire frame of ``command``, the data of a log entry."""
    body = [
        command.client_id,
        command.sequence,
        command.key,
        command.kind,
        command.operation,
        command.value,
        command.timestamp_ms,
        command.limit,
    ]
    return wire.encode(wire.Tag.RAFT_MACHINE_COMMAND, body)


def _command_from(body: Any) -> Command:
    if not isinstance(body, list) or len(body) != 8:
        raise ValueError("a command must have 8 fields")
    return Command(*body)


def decode_command(data: bytes | bytearray | memoryview) -> Command:
    """The command in ``data``; raises :class:`~crdtstream.errors.DecodeError` on bad bytes."""
    return wire.decode_as(data, wire.Tag.RAFT_MACHINE_COMMAND, _command_from)


def encode_result(result: Result) -> bytes:
    """The wire frame of ``result`` (sent back to a client on another node)."""
    body = [result.ok, result.applied, result.value, result.error]
    return wire.encode(wire.Tag.RAFT_MACHINE_RESULT, body)


def result_from(body: Any) -> Result:
    """A result from its body; raises ``TypeError``/``ValueError`` on the wrong shape."""
    ok, applied, value, error = body
    if type(ok) is not bool or type(applied) is not bool or not isinstance(error, str):
        raise TypeError("a result is [bool, bool, value, str]")
    return Result(ok, applied, value, error)


def decode_result(data: bytes | bytearray | memoryview) -> Result:
    """The result in ``data``; raises :class:`~crdtstream.errors.DecodeError` on bad bytes."""
    return wire.decode_as(data, wire.Tag.RAFT_MACHINE_RESULT, result_from)


def result_body(result: Result) -> list[Any]:
    """The body of a result, as :func:`encode_result` and snapshots store it."""
    return [result.ok, result.applied, result.value, result.error]
