"""Ballots, messages and acceptor records of per-key CASPaxos, as they travel and sit on disk.

A ballot is ``(counter, proposer)`` and ballots compare as tuples (Rystsov 2018, §2.2: "a
ballot number is a pair of a counter and a proposer id"). The proposer id carries a nonce drawn
at start, so a proposer that restarted and counts from zero again never reuses a ballot it may
have sent before its crash with another value.

Every message names one key. Besides the four messages of the protocol and REJECT, a node
that does not lead a key sends an operation to the key's preferred proposer as FORWARD (the
command, or none for a read, with its operation id and remaining ticks) and gets its outcome
back as FORWARDED (the result, the read's view, or the error). Both travel inline in the
frame's rows, decoded once.

Messages travel in one wire frame per destination
(``PAXOS_MESSAGE``); an acceptor's record of a key (what it promised, what it accepted) is
persisted as ``PAXOS_ACCEPTOR_RECORD``. Decoders raise :class:`~crdtstream.errors.DecodeError`
and nothing else.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crdtstream import wire
from crdtstream.raft.commands import (
    Command,
    Result,
    command_body,
    command_from,
    result_body,
    result_from,
)
from crdtstream.raft.state_machine import KeyView

__all__ = [
    "ZERO_BALLOT",
    "AcceptorRecord",
    "Ballot",
    "ForwardAnswer",
    "Message",
    "MessageType",
    "decode_messages",
    "decode_record",
    "encode_messages",
    "encode_record",
]

Ballot = tuple[int, str]
"""``(counter, proposer id)``; ordered as a tuple."""

ZERO_BALLOT: Ballot = (0, "")
"""Lower than any ballot a proposer sends (its counter starts at 1)."""


class MessageType(enum.IntEnum):
    """The four messages of the protocol, the refusal an acceptor answers either with, and an
    operation forwarded to a key's preferred proposer with its answer."""

    PREPARE = 1
    PROMISE = 2
    ACCEPT = 3
    ACCEPTED = 4
    REJECT = 5
    FORWARD = 6
    FORWARDED = 7


_FORWARDING = (MessageType.FORWARD, MessageType.FORWARDED)


@dataclass(frozen=True, slots=True)
class Message:
    """One protocol message about one key.

    ``ballot`` is the ballot the message is about (the proposer's). A PROMISE carries the
    acceptor's accepted ``(accepted, value)`` (``ZERO_BALLOT`` and ``b""`` for none); an ACCEPT
    carries the proposed ``value`` and, in ``accepted``, the proposer's next ballot to promise
    along (``ZERO_BALLOT``: none); a REJECT carries in ``accepted`` the highest ballot the
    acceptor has seen, so the proposer can fast-forward its counter past it.

    A FORWARD carries the forwarder's ``operation`` id, the ticks it has left (``timeout``)
    and the ``command`` (None for a read); its FORWARDED answer the same ``operation`` and the
    ``answer``. The FORWARD's
    ``ballot`` is ``(0, forwarder's proposer id)`` and its answer echoes it, so an answer meant
    for a run of the forwarder before its restart (whose operation ids began again at 1) is
    told apart.
    """

    type: MessageType
    sender: str
    to: str
    key: str
    ballot: Ballot
    accepted: Ballot = ZERO_BALLOT
    value: bytes = b""
    operation: int = 0
    timeout: int = 0
    command: Command | None = None
    answer: ForwardAnswer | None = None


@dataclass(frozen=True, slots=True)
class ForwardAnswer:
    """How a forwarded operation ended at the proposer that ran it (the fields of an outcome)."""

    answer: Result | KeyView | None = None
    error: str = ""
    unknown: bool = False
    refused: bool = False


def _answer_body(answer: ForwardAnswer) -> list[Any]:
    if answer.error:
        body: list[Any] = ["error", answer.error, answer.unknown, answer.refused]
    elif isinstance(answer.answer, Result):
        body = ["result", result_body(answer.answer)]
    elif answer.answer is None:
        body = ["read", None]
    else:
        view = answer.answer
        body = ["read", [view.kind, [list(window) for window in view.windows]]]
    return body


def _answer_from(body: Any) -> ForwardAnswer:
    kind = body[0]
    if kind == "error":
        _, error, unknown, refused = body
        if not isinstance(error, str) or not error:
            raise ValueError("a forwarded error needs its text")
        if type(unknown) is not bool or type(refused) is not bool:
            raise TypeError("a forwarded error's flags are booleans")
        return ForwardAnswer(None, error, unknown, refused)
    if kind == "result":
        _, result = body
        return ForwardAnswer(result_from(result))
    if kind != "read":
        raise ValueError(f"unknown forwarded answer {kind!r}")
    _, view = body
    if view is None:
        return ForwardAnswer(None)
    view_kind, windows = view
    if not isinstance(view_kind, str) or not isinstance(windows, list):
        raise TypeError("a read answer is [kind, [[start_ms, end_ms, value], ...]]")
    checked = []
    for start_ms, end_ms, value in windows:
        if type(start_ms) is not int or type(end_ms) is not int:
            raise TypeError("a read answer's window bounds are integers")
        checked.append((start_ms, end_ms, value))
    return ForwardAnswer(KeyView(view_kind, tuple(checked)))


@dataclass(frozen=True, slots=True)
class AcceptorRecord:
    """What one acceptor holds for one key: the highest ballot promised and the value it last
    accepted with its ballot (``ZERO_BALLOT`` and ``b""`` before any accept)."""

    promised: Ballot = ZERO_BALLOT
    accepted: Ballot = ZERO_BALLOT
    value: bytes = b""


def _ballot(body: Any) -> Ballot:
    counter, proposer = body
    if type(counter) is not int or counter < 0 or not isinstance(proposer, str):
        raise ValueError(f"a ballot is [counter >= 0, proposer], got {body!r}")
    return counter, proposer


def _bytes(body: Any) -> bytes:
    if not isinstance(body, bytes):
        raise TypeError(f"expected bytes, got {type(body).__name__}")
    return body


def _value(body: Any) -> bytes:
    """A key's value: empty, or a one-key state machine snapshot (checked by its tag here;
    a well-tagged value that still does not restore is refused where it is applied)."""
    value = _bytes(body)
    if value and wire.peek_tag(value) != wire.Tag.RAFT_MACHINE_SNAPSHOT:
        raise ValueError("a paxos value must be a state machine snapshot")
    return value


def _text(body: Any) -> str:
    if not isinstance(body, str) or not body:
        raise ValueError(f"expected a non-empty string, got {body!r}")
    return body


def encode_messages(messages: Sequence[Message]) -> bytes:
    """One frame holding ``messages`` (all from one sender to one destination)."""
    rows: list[list[Any]] = []
    for m in messages:
        row = [int(m.type), m.key, list(m.ballot), list(m.accepted), m.value]
        if m.type is MessageType.FORWARD:
            row += [m.operation, m.timeout, None if m.command is None else command_body(m.command)]
        elif m.type is MessageType.FORWARDED:
            row += [m.operation, m.timeout, _answer_body(m.answer or ForwardAnswer())]
        rows.append(row)
    first = messages[0]
    return wire.encode(wire.Tag.PAXOS_MESSAGE, [first.sender, first.to, rows])


def _messages_from(body: Any) -> list[Message]:
    sender, to, rows = body
    sender, to = _text(sender), _text(to)
    if not isinstance(rows, list) or not rows:
        raise TypeError("paxos messages are a non-empty list")
    messages = []
    for row in rows:
        kind, key, ballot, accepted, value, *forwarding = row
        kind = MessageType(kind)
        if len(forwarding) != (3 if kind in _FORWARDING else 0):
            raise ValueError(f"a {kind.name} row has the wrong number of fields")
        message = Message(
            kind, sender, to, _text(key), _ballot(ballot), _ballot(accepted), _value(value)
        )
        if forwarding:
            message = _forwarding(message, *forwarding)
        messages.append(message)
    return messages


def _forwarding(message: Message, operation: Any, timeout: Any, body: Any) -> Message:
    """A FORWARD or FORWARDED message with its fields checked."""
    if type(operation) is not int or operation < 1 or type(timeout) is not int or timeout < 0:
        raise ValueError("a forwarded operation has an id >= 1 and ticks >= 0")
    command = answer = None
    if message.type is MessageType.FORWARDED:
        answer = _answer_from(body)
    elif body is not None:
        command = command_from(body)
        if command.key != message.key:
            raise ValueError("a forwarded command names another key")
    return Message(
        message.type,
        message.sender,
        message.to,
        message.key,
        message.ballot,
        message.accepted,
        message.value,
        operation,
        timeout,
        command,
        answer,
    )


def decode_messages(data: bytes | bytearray | memoryview) -> list[Message]:
    """The messages of a ``PAXOS_MESSAGE`` frame; :class:`DecodeError` on bad bytes."""
    return wire.decode_as(data, wire.Tag.PAXOS_MESSAGE, _messages_from)


def encode_record(key: str, record: AcceptorRecord) -> bytes:
    """The durable form of one acceptor record."""
    body = [key, list(record.promised), list(record.accepted), record.value]
    return wire.encode(wire.Tag.PAXOS_ACCEPTOR_RECORD, body)


def _record_from(body: Any) -> tuple[str, AcceptorRecord]:
    key, promised, accepted, value = body
    return _text(key), AcceptorRecord(_ballot(promised), _ballot(accepted), _value(value))


def decode_record(data: bytes | bytearray | memoryview) -> tuple[str, AcceptorRecord]:
    """A key and its acceptor record; :class:`DecodeError` on bad bytes."""
    return wire.decode_as(data, wire.Tag.PAXOS_ACCEPTOR_RECORD, _record_from)
