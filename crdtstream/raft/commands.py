"""Commands of the replicated state machine and their results, as they travel and sit in the log.

A command names a key, its kind, an operation and the event's ``timestamp_ms``; it carries the
client's ``(client_id, sequence)`` so that a retry is applied at most once. A command may also
carry the client's ``idempotency_key`` and a digest of the request it came with
(:func:`request_digest`): the state machine remembers both in its replicated table, so a retry
of the same request under the same key, made at any node, is applied at most once too. Both
commands and results go through :mod:`crdtstream.wire`; a decoder raises
:class:`~crdtstream.errors.DecodeError` and nothing else.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from crdtstream import wire

__all__ = [
    "CLAIMS_HELD",
    "CLAIM_OPERATIONS",
    "KINDS",
    "OPERATIONS",
    "TEXT_KINDS",
    "Command",
    "Result",
    "check_count",
    "check_value",
    "command_body",
    "command_from",
    "decode_command",
    "decode_result",
    "encode_command",
    "encode_result",
    "request_digest",
    "result_body",
    "result_from",
]

IDEMPOTENCY_KEY_CHARS_MAX = 256
"""The longest idempotency key accepted (keys are remembered in the replicated state)."""

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

CLAIM_OPERATIONS = frozenset({"claim", "settle"})
"""Operations on the idempotency table alone, for a quorum write's idempotency key (any kind;
see :mod:`crdtstream.raft.state_machine`): ``claim`` with the claiming replica as ``value``,
``settle`` with ``"done <accepted> <replica>"`` or ``"released <replica>"``."""

CLAIMS_HELD = "claims_held"
"""The operation that answers, as its result's value, the ``[idempotency key, digest]`` pairs
the replica named by ``value`` claimed and has not settled (any key and kind, no idempotency
key): how a node outside the Raft voters, which has no copy of the table, finds its claims."""

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
    idempotency_key: str = ""
    """The client's idempotency key ("" for none): at most one command per key is applied."""
    request_digest: str = ""
    """A digest of the request behind ``idempotency_key`` (see :func:`request_digest`)."""

    def __post_init__(self) -> None:
        if self.kind not in OPERATIONS:
            raise ValueError(f"unknown kind {self.kind!r}; expected one of {KINDS}")
        claim = self.operation in CLAIM_OPERATIONS
        held = self.operation == CLAIMS_HELD
        if self.operation not in OPERATIONS[self.kind] and not claim and not held:
            raise ValueError(f"kind {self.kind} has no operation {self.operation!r}")
        if not self.client_id or not self.key:
            raise ValueError("client_id and key must not be empty")
        check_count(self.sequence, "sequence")
        check_count(self.timestamp_ms, "timestamp_ms")
        if claim:
            if not isinstance(self.value, str) or not self.idempotency_key:
                raise ValueError(f"{self.operation} takes a text value and an idempotency key")
        elif held:
            if not isinstance(self.value, str) or self.idempotency_key:
                raise ValueError(f"{CLAIMS_HELD} takes a replica and no idempotency key")
        elif self.operation != "read":
            check_value(self.kind, self.value)
        if (self.operation == "conditional_add") != (self.limit is not None):
            raise ValueError("a limit is required by conditional_add and only by it")
        if self.limit is not None:
            check_value("counter", self.limit)
        if not isinstance(self.idempotency_key, str) or not isinstance(self.request_digest, str):
            raise TypeError("idempotency_key and request_digest must be strings")
        if len(self.idempotency_key) > IDEMPOTENCY_KEY_CHARS_MAX:
            raise ValueError(
                f"an idempotency key has at most {IDEMPOTENCY_KEY_CHARS_MAX} characters"
            )
        if bool(self.idempotency_key) != bool(self.request_digest):
            raise ValueError("an idempotency key needs a request digest and only it has one")


def request_digest(
    key: str,
    kind: str,
    operation: str,
    value: object,
    limit: object,
    timestamp_ms: int | None,
) -> str:
    """A digest of a write request as the client made it (its event time as given, ``None`` for
    "now"): two retries of one request agree on it at every node; another request does not."""
    body = wire.encode(
        wire.Tag.RAFT_MACHINE_COMMAND, [key, kind, operation, value, limit, timestamp_ms]
    )
    return hashlib.blake2b(body, digest_size=16).hexdigest()


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
    return wire.encode(wire.Tag.RAFT_MACHINE_COMMAND, command_body(command))


def command_body(command: Command) -> list[Any]:
    """The body of a command, as :func:`encode_command` frames it (and other frames embed it)."""
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
    if command.idempotency_key:
        body += [command.idempotency_key, command.request_digest]
    return body


def command_from(body: Any) -> Command:
    """A command from its body; raises ``TypeError``/``ValueError`` on the wrong shape."""
    # Ten fields with an idempotency key, eight without (as every command before keys had).
    if not isinstance(body, list) or len(body) not in (8, 10):
        raise ValueError("a command must have 8 or 10 fields")
    return Command(*body)


def decode_command(data: bytes | bytearray | memoryview) -> Command:
    """The command in ``data``; raises :class:`~crdtstream.errors.DecodeError` on bad bytes."""
    return wire.decode_as(data, wire.Tag.RAFT_MACHINE_COMMAND, command_from)


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
