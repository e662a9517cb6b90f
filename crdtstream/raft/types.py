"""Plain data of the Raft core: log entries, hard state, snapshots, messages and ``Ready``.

Everything here is an immutable value. Node ids are the operators' node id strings
(:func:`crdtstream.ids.validate_node_id`); "no node" is ``None``. Message types follow etcd-io/raft
so that its design notes and tests read across directly.

The wire forms (``encode_*`` / ``decode_*``) go through :mod:`crdtstream.wire`; a decoder raises
:class:`~crdtstream.errors.DecodeError` and nothing else. Bodies are positional msgpack arrays so a
heartbeat costs a few dozen bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crdtstream import wire
from crdtstream.ids import is_valid_node_id

__all__ = [
    "ENTRY_OVERHEAD_BYTES",
    "ConfChange",
    "ConfChangeKind",
    "Entry",
    "EntryKind",
    "HardState",
    "Message",
    "MessageType",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "decode_conf_change",
    "decode_entry",
    "decode_hard_state",
    "decode_message",
    "decode_snapshot",
    "encode_conf_change",
    "encode_entry",
    "encode_hard_state",
    "encode_message",
    "encode_snapshot",
    "is_response",
]


ENTRY_OVERHEAD_BYTES = 16
"""What an entry costs beyond its data, in the size estimates that bound messages."""


class EntryKind(enum.IntEnum):
    """What a log entry carries. ONLY APPEND: the numbers are in the log on disk."""

    NORMAL = 0
    CONF_CHANGE = 1
    EMPTY = 2


class ConfChangeKind(enum.IntEnum):
    """A single-server membership change. ONLY APPEND."""

    ADD_VOTER = 0
    REMOVE_VOTER = 1


class Role(enum.IntEnum):
    """The role a node plays in its current term."""

    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class MessageType(enum.IntEnum):
    """Message types, as in etcd-io/raft. ONLY APPEND: the numbers are on the wire.

    ``HUP``, ``BEAT``, ``CHECK_QUORUM``, ``UNREACHABLE`` and ``SNAPSHOT_STATUS`` are local: the
    node steps them into itself and never sends them. ``PROP``, ``READ_INDEX`` and
    ``TRANSFER_LEADER`` are requests a follower forwards to the leader with term 0.
    """

    HUP = 0
    BEAT = 1
    PROP = 2
    APP = 3
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    SNAP = 7
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10
    SNAPSHOT_STATUS = 11
    CHECK_QUORUM = 12
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14
    READ_INDEX = 15
    READ_INDEX_RESP = 16
    PRE_VOTE = 17
    PRE_VOTE_RESP = 18


_RESPONSES = frozenset(
    {
        MessageType.APP_RESP,
        MessageType.VOTE_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.UNREACHABLE,
        MessageType.READ_INDEX_RESP,
        MessageType.PRE_VOTE_RESP,
    }
)

LOCAL_MESSAGE_TYPES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.CHECK_QUORUM,
        MessageType.UNREACHABLE,
        MessageType.SNAPSHOT_STATUS,
    }
)
"""Types a node steps into itself; a peer sending one of them is refused."""


def is_response(message_type: MessageType) -> bool:
    """True for message types that answer a request (they never start an election)."""
    return message_type in _RESPONSES


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry: ``data`` is a command (NORMAL), an encoded :class:`ConfChange`, or empty."""

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def size_bytes(self) -> int:
        """An estimate of the entry's size, used to bound messages and Ready batches."""
        return len(self.data) + ENTRY_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on stable storage before any message that depends on it leaves the node."""

    term: int = 0
    vote: str | None = None
    commit: int = 0

    def is_empty(self) -> bool:
        """True for the state of a node that never saw any term."""
        return self == EMPTY_HARD_STATE


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting (not persisted): the known leader and this node's role."""

    leader: str | None
    role: Role


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot sits in the log and the voter set in force at that point."""

    index: int = 0
    term: int = 0
    voters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine image covering the log up to ``meta.index``."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    def is_empty(self) -> bool:
        """True for the placeholder snapshot at index 0."""
        return self.meta.index == 0


@dataclass(frozen=True, slots=True)
class ConfChange:
    """Add or remove one voter. Carried in the data of a CONF_CHANGE entry."""

    kind: ConfChangeKind
    node_id: str


@dataclass(frozen=True, slots=True)
class ReadState:
    """A confirmed read: once ``applied >= index`` the state machine may answer ``request_ctx``."""

    index: int
    request_ctx: bytes


@dataclass(frozen=True, slots=True)
class Message:
    """One Raft message. Fields unused by a type keep their defaults.

    ``log_term``/``index`` name the entry preceding ``entries`` (APP), the candidate's last entry
    (VOTE, PRE_VOTE) or the acknowledged index (APP_RESP). ``reject_hint`` is the follower's
    suggestion of where to probe next after a rejected append, and ``log_term`` in a rejection is
    the term of that entry (etcd's fast backtracking). ``context`` carries a read request context,
    the heartbeat round number that confirms reads, the transferee of TRANSFER_LEADER, or the
    marker of an election started by leadership transfer. ``sender`` is always the node that
    created the message (forwarded requests keep their origin), so a driver may check it
    against the transport's authenticated peer.
    """

    type: MessageType
    sender: str | None = None
    to: str | None = None
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: Snapshot | None = None


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything the node wants done, in the order the driver must do it.

    1. Persist ``snapshot`` when not ``None`` (it replaces the whole log), then ``entries``
       (replacing any stored entries at or after the first one's index, since entries may
       follow the snapshot), then ``hard_state`` when not ``None``; make them durable.
    2. Only then send ``messages`` — unless ``send_while_persisting``: then they may leave
       before (or while) step 1 runs.
    3. Apply ``snapshot`` and then ``committed_entries`` to the state machine; serve
       ``read_states`` once applied reaches their index.
    4. Call ``advance(ready)``. Step no message into the node between ``ready()`` and
       ``advance()``: a leader counts its own new entries as replicated from the moment it
       appends them, which is only true once step 1 is done.

    ``send_while_persisting`` is set for a leader whose term and vote did not change since
    the previous Ready (so they are durable already): its messages carry entries for the
    followers to store and the commit index, and nothing in them claims that this node stored
    the entries of this Ready. The leader writes its log while the followers write theirs
    (Raft thesis §10.2.1, etcd-io/raft ``doc.go``). A crash before step 1 completes loses
    entries that were never committed: the commit index counts the leader's copy only for
    acknowledgements stepped after ``advance()``.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    committed_entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    send_while_persisting: bool = False

    @property
    def must_sync(self) -> bool:
        """True when this Ready holds something that must be fsynced before sending."""
        return bool(self.entries) or self.hard_state is not None or self.snapshot is not None


# -- wire forms -------------------------------------------------------------------------------


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"{what} must be bytes, got {type(value).__name__}")
    return value


def _node(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not is_valid_node_id(value):
        raise ValueError(f"{what} must be a node id or nil, got {value!r}")
    return value


def _required_node(value: Any, what: str) -> str:
    node = _node(value, what)
    if node is None:
        raise ValueError(f"{what} must be a node id, got nil")
    return node


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a boolean, got {value!r}")
    return value


def _list(value: Any, what: str, length: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{what} must be an array, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise ValueError(f"{what} must have {length} fields, got {len(value)}")
    return value


def _entry_body(entry: Entry) -> list[Any]:
    return [entry.term, entry.index, int(entry.kind), entry.data]


_ENTRY_KINDS = tuple(EntryKind)


def _entries_body(entries: tuple[Entry, ...]) -> list[Any]:
    """Entries as four parallel arrays: far cheaper to pack and check than one array each."""
    if not entries:
        return []
    return [
        [e.term for e in entries],
        [e.index for e in entries],
        [int(e.kind) for e in entries],
        [e.data for e in entries],
    ]


def _entries_from(body: Any) -> tuple[Entry, ...]:
    columns = _list(body, "message.entries")
    if not columns:
        return ()
    terms, indexes, kinds, datas = (_list(c, "message.entries") for c in _list(columns, "", 4))
    if not len(terms) == len(indexes) == len(kinds) == len(datas):
        raise ValueError("message.entries columns differ in length")
    if not all(type(n) is int and n >= 0 for n in terms + indexes):
        raise ValueError("entry terms and indexes must be non-negative integers")
    if not all(type(k) is int and 0 <= k < len(_ENTRY_KINDS) for k in kinds):
        raise ValueError("unknown entry kind")
    if not all(isinstance(d, bytes) for d in datas):
        raise TypeError("entry data must be bytes")
    return tuple(map(Entry, terms, indexes, [_ENTRY_KINDS[k] for k in kinds], datas))


def _entry_from(body: Any) -> Entry:
    term, index, kind, data = _list(body, "entry", 4)
    return Entry(
        _int(term, "entry.term"),
        _int(index, "entry.index"),
        EntryKind(kind),
        _bytes(data, "entry.data"),
    )


def _snapshot_body(snapshot: Snapshot) -> list[Any]:
    meta = snapshot.meta
    return [meta.index, meta.term, list(meta.voters), snapshot.data]


def _snapshot_from(body: Any) -> Snapshot:
    index, term, voters, data = _list(body, "snapshot", 4)
    voter_ids = tuple(_required_node(v, "snapshot.voters") for v in _list(voters, "voters"))
    meta = SnapshotMeta(_int(index, "snapshot.index"), _int(term, "snapshot.term"), voter_ids)
    return Snapshot(meta, _bytes(data, "snapshot.data"))


def _message_body(message: Message) -> list[Any]:
    snapshot = None if message.snapshot is None else _snapshot_body(message.snapshot)
    return [
        int(message.type),
        message.sender,
        message.to,
        message.term,
        message.log_term,
        message.index,
        _entries_body(message.entries),
        message.commit,
        message.reject,
        message.reject_hint,
        message.context,
        snapshot,
    ]


def _message_from(body: Any) -> Message:
    fields = _list(body, "message", 12)
    kind = MessageType(fields[0])
    if kind in LOCAL_MESSAGE_TYPES:
        raise ValueError(f"message type {kind.name} is local and never travels")
    snapshot = None if fields[11] is None else _snapshot_from(fields[11])
    return Message(
        type=kind,
        sender=_node(fields[1], "message.sender"),
        to=_node(fields[2], "message.to"),
        term=_int(fields[3], "message.term"),
        log_term=_int(fields[4], "message.log_term"),
        index=_int(fields[5], "message.index"),
        entries=_entries_from(fields[6]),
        commit=_int(fields[7], "message.commit"),
        reject=_bool(fields[8], "message.reject"),
        reject_hint=_int(fields[9], "message.reject_hint"),
        context=_bytes(fields[10], "message.context"),
        snapshot=snapshot,
    )


def _hard_state_from(body: Any) -> HardState:
    term, vote, commit = _list(body, "hard state", 3)
    return HardState(
        _int(term, "hard_state.term"),
        _node(vote, "hard_state.vote"),
        _int(commit, "hard_state.commit"),
    )


def _conf_change_from(body: Any) -> ConfChange:
    kind, node_id = _list(body, "conf change", 2)
    checked = _required_node(node_id, "conf_change.node_id")
    return ConfChange(ConfChangeKind(kind), checked)


def encode_message(message: Message) -> bytes:
    """The wire frame of ``message``."""
    return wire.encode(wire.Tag.RAFT_MESSAGE, _message_body(message))


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """The message in ``data``; raises :class:`~crdtstream.errors.DecodeError` on bad bytes."""
    return wire.decode_as(data, wire.Tag.RAFT_MESSAGE, _message_from)


def encode_entry(entry: Entry) -> bytes:
    """The frame of one log entry (for a write-ahead log)."""
    return wire.encode(wire.Tag.RAFT_ENTRY, _entry_body(entry))


def decode_entry(data: bytes | bytearray | memoryview) -> Entry:
    """The entry in ``data``; raises :class:`~crdtstream.errors.DecodeError` on bad bytes."""
    return wire.decode_as(data, wire.Tag.RAFT_ENTRY, _entry_from)


def encode_hard_state(state: HardState) -> bytes:
    """The frame of a hard state (for a write-ahead log)."""
    return wire.encode(wire.Tag.RAFT_HARD_STATE, [state.term, state.vote, state.commit])


def decode_hard_state(data: bytes | bytearray | memoryview) -> HardState:
    """The hard state in ``data``; raises :class:`~crdtstream.errors.DecodeError` on bad bytes."""
    return wire.decode_as(data, wire.Tag.RAFT_HARD_STATE, _hard_state_from)


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """The frame of a snapshot (metadata and state-machine image)."""
    return wire.encode(wire.Tag.RAFT_SNAPSHOT, _snapshot_body(snapshot))


def decode_snapshot(data: bytes | bytearray | memoryview) -> Snapshot:
    """The snapshot in ``data``; raises :class:`~crdtstream.errors.DecodeError` on bad bytes."""
    return wire.decode_as(data, wire.Tag.RAFT_SNAPSHOT, _snapshot_from)


def encode_conf_change(change: ConfChange) -> bytes:
    """The data of a CONF_CHANGE entry."""
    return wire.encode(wire.Tag.RAFT_CONF_CHANGE, [int(change.kind), change.node_id])


def decode_conf_change(data: bytes | bytearray | memoryview) -> ConfChange:
    """The change in a CONF_CHANGE entry; raises :class:`~crdtstream.errors.DecodeError`."""
    return wire.decode_as(data, wire.Tag.RAFT_CONF_CHANGE, _conf_change_from)


def entries_size_bytes(entries: Sequence[Entry]) -> int:
    """The summed size estimate of ``entries``."""
    return sum(entry.size_bytes() for entry in entries)
