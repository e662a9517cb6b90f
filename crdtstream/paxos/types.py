"""Ballots, messages and acceptor records of per-key CASPaxos, as they travel and sit on disk.

A ballot is ``(counter, proposer)`` and ballots compare as tuples (Rystsov 2018, §2.2: "a
ballot number is a pair of a counter and a proposer id"). The proposer id carries a nonce drawn
at start, so a proposer that restarted and counts from zero again never reuses a ballot it may
have sent before its crash with another value.

Every message names one key. Messages travel in one wire frame per destination
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

__all__ = [
    "ZERO_BALLOT",
    "AcceptorRecord",
    "Ballot",
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
    """The four messages of the protocol and the refusal an acceptor answers either with."""

    PREPARE = 1
    PROMISE = 2
    ACCEPT = 3
    ACCEPTED = 4
    REJECT = 5


@dataclass(frozen=True, slots=True)
class Message:
    """One protocol message about one key.

    ``ballot`` is the ballot the message is about (the proposer's). A PROMISE carries the
    acceptor's accepted ``(accepted, value)`` (``ZERO_BALLOT`` and ``b""`` for none); an ACCEPT
    carries the proposed ``value`` and, in ``accepted``, the proposer's next ballot to promise
    along (``ZERO_BALLOT``: none); a REJECT carries in ``accepted`` the highest ballot the
    acceptor has seen, so the proposer can fast-forward its counter past it.
    """

    type: MessageType
    sender: str
    to: str
    key: str
    ballot: Ballot
    accepted: Ballot = ZERO_BALLOT
    value: bytes = b""


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
    rows = [[int(m.type), m.key, list(m.ballot), list(m.accepted), m.value] for m in messages]
    first = messages[0]
    return wire.encode(wire.Tag.PAXOS_MESSAGE, [first.sender, first.to, rows])


def _messages_from(body: Any) -> list[Message]:
    sender, to, rows = body
    sender, to = _text(sender), _text(to)
    if not isinstance(rows, list) or not rows:
        raise TypeError("paxos messages are a non-empty list")
    messages = []
    for kind, key, ballot, accepted, value in rows:
        messages.append(
            Message(
                MessageType(kind),
                sender,
                to,
                _text(key),
                _ballot(ballot),
                _ballot(accepted),
                _value(value),
            )
        )
    return messages


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
