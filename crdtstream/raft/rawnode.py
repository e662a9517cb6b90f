"""The driver's handle on one Raft peer: inputs in, one :class:`Ready` out at a time.

The loop a driver runs (etcd-io/raft ``rawnode.go``)::

    node.tick()                       # every tick_ms
    node.step(decode_message(frame))  # every frame received
    if node.has_ready():
        ready = node.ready()
        persist ready.entries, ready.hard_state, ready.snapshot; fsync
        send ready.messages
        apply ready.snapshot, ready.committed_entries; serve ready.read_states when applied
        node.advance(ready)

``ready()`` hands its messages and read states over at once, so a second ``ready()`` before
``advance()`` is refused rather than risk sending anything twice or applying anything twice.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from crdtstream.config import RaftConfig
from crdtstream.errors import DecodeError, ProtocolViolationError
from crdtstream.ids import validate_node_id
from crdtstream.raft.raft import Raft
from crdtstream.raft.storage import Storage
from crdtstream.raft.types import (
    LOCAL_MESSAGE_TYPES,
    ConfChange,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    Ready,
    Role,
    SoftState,
    decode_conf_change,
    encode_conf_change,
    is_response,
)

__all__ = ["RawNode", "Status", "refusal"]

_FORWARDED = frozenset({MessageType.PROP, MessageType.READ_INDEX, MessageType.TRANSFER_LEADER})


@dataclass(frozen=True, slots=True)
class Status:
    """A snapshot of one peer's state, for status pages and tests."""

    id: str
    term: int
    vote: str | None
    commit: int
    applied: int
    leader: str | None
    role: Role
    voters: tuple[str, ...]
    last_index: int
    match_by_voter: dict[str, int]


class RawNode:
    """One Raft peer; every method is a pure state transition (no clock, no I/O)."""

    def __init__(
        self,
        node_id: str,
        storage: Storage,
        config: RaftConfig,
        rng: random.Random,
        applied: int = 0,
    ) -> None:
        """Start (or restart) from ``storage``; ``applied`` is what the state machine holds."""
        self.raft = Raft(node_id, storage, config, rng, applied)
        self._previous_soft = self.raft.soft_state()
        self._previous_hard = self.raft.hard_state()
        self._outstanding: Ready | None = None

    # -- inputs --

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (PreVote first when enabled)."""
        self.raft.step(Message(MessageType.HUP, self.raft.id))

    def propose(self, command: bytes) -> None:
        """Propose a command. Raises :class:`NotLeaderError` when it cannot be taken here, or
        :class:`UnavailableError` when ``max_uncommitted_bytes`` of proposals await commit.

        At a follower the proposal is forwarded to the leader and may be lost on the way: the
        caller learns of success only by seeing the command applied.
        """
        self.propose_many([command])

    def propose_many(self, commands: Iterable[bytes]) -> None:
        """Propose several commands in one step (one append message per follower)."""
        entries = tuple(Entry(0, 0, EntryKind.NORMAL, bytes(command)) for command in commands)
        if entries:
            self.raft.step(Message(MessageType.PROP, self.raft.id, entries=entries))

    def propose_conf_change(self, change: ConfChange) -> None:
        """Propose adding or removing one voter. While another change is pending, the entry
        is turned into an empty one, so the change is never applied and may be retried."""
        entry = Entry(0, 0, EntryKind.CONF_CHANGE, encode_conf_change(change))
        self.raft.step(Message(MessageType.PROP, self.raft.id, entries=(entry,)))

    def apply_conf_change(self, change: ConfChange) -> tuple[str, ...]:
        """Apply a committed CONF_CHANGE entry (call while applying); returns the new voters."""
        return self.raft.apply_conf_change(change)

    def step(self, message: Message) -> None:
        """Handle a message received from a peer.

        Raises :class:`~crdtstream.errors.ProtocolViolationError` (a :class:`ValueError`),
        changing nothing in the log, for a message no correct peer sends: one :func:`refusal`
        names (a local-only type, our own id as sender, an append whose entries do not follow
        on, a proposed membership change that does not decode), or an append that conflicts
        with committed entries. Stale or misdirected messages are dropped
        silently, as the protocol expects them.
        """
        reason = refusal(message, self.raft.id)
        if reason is not None:
            raise ProtocolViolationError(reason)
        if (message.term == 0) != (message.type in _FORWARDED):
            return  # forwarded requests, and only they, travel without a term
        if is_response(message.type) and message.sender not in self.raft.tracker.progress:
            return  # an answer from a node that is not (or no longer) a voter
        if message.type in _FORWARDED and self.raft.role is not Role.LEADER:
            return  # we no longer lead: never forward twice (the requester retries)
        self.raft.step(message)

    def read_index(self, request_ctx: bytes) -> None:
        """Ask for a linearizable read. The answer is a :class:`ReadState` with this context
        in a later Ready; it may never come (leader change, loss), so callers retry."""
        self.raft.step(Message(MessageType.READ_INDEX, self.raft.id, context=bytes(request_ctx)))

    def transfer_leader(self, transferee: str) -> None:
        """Ask the leader to hand leadership to ``transferee`` (forwarded by followers)."""
        validate_node_id(transferee)
        message = Message(MessageType.TRANSFER_LEADER, self.raft.id, context=transferee.encode())
        self.raft.step(message)

    def report_unreachable(self, node_id: str) -> None:
        """The driver could not reach ``node_id``: stop streaming to it and probe instead."""
        self.raft.step(Message(MessageType.UNREACHABLE, node_id))

    def report_snapshot(self, node_id: str, succeeded: bool) -> None:
        """The driver learned the fate of a snapshot sent to ``node_id``."""
        self.raft.step(Message(MessageType.SNAPSHOT_STATUS, node_id, reject=not succeeded))

    # -- outputs --

    def has_ready(self) -> bool:
        """True when :meth:`ready` would return something to do."""
        raft = self.raft
        hard = raft.hard_state()
        return (
            raft.soft_state() != self._previous_soft
            or (hard != self._previous_hard and not hard.is_empty())
            or bool(raft.log.unstable.entries)
            or raft.log.unstable.snapshot is not None
            or bool(raft.messages)
            or bool(raft.followers_to_append)
            or bool(raft.read_states)
            or raft.log.has_next_committed_entries()
        )

    def ready(self) -> Ready:
        """Take the pending work; call :meth:`advance` with it once done."""
        if self._outstanding is not None:
            raise RuntimeError("ready() called again before advance()")
        raft = self.raft
        raft.send_marked_appends()
        soft, hard = raft.soft_state(), raft.hard_state()
        committed = raft.log.next_committed_entries(raft.config.max_apply_bytes_per_ready)
        ready = Ready(
            soft_state=None if soft == self._previous_soft else soft,
            hard_state=None if hard == self._previous_hard else hard,
            entries=tuple(raft.log.unstable.entries),
            snapshot=raft.log.unstable.snapshot,
            committed_entries=tuple(committed),
            messages=tuple(raft.messages),
            read_states=tuple(raft.read_states),
            send_while_persisting=self._may_send_while_persisting(hard),
        )
        raft.messages = []
        raft.read_states = []
        raft.read_only.messages_handed_out()
        if committed:
            raft.log.applying_to(committed[-1].index)
            raft.committed_handed_out(committed)
        self._previous_soft, self._previous_hard = soft, hard
        self._outstanding = ready
        return ready

    def _may_send_while_persisting(self, hard: HardState) -> bool:
        """A leader whose term and vote are durable already (see :class:`Ready`)."""
        previous = self._previous_hard
        return (
            self.raft.role is Role.LEADER
            and self.raft.log.unstable.snapshot is None
            and (hard.term, hard.vote) == (previous.term, previous.vote)
        )

    def advance(self, ready: Ready) -> None:
        """The driver persisted, sent and applied ``ready``."""
        if ready is not self._outstanding:
            raise RuntimeError("advance() must be given the Ready last returned by ready()")
        self._outstanding = None
        log = self.raft.log
        if ready.entries:
            last = ready.entries[-1]
            log.stable_to(last.index, last.term)
        if ready.snapshot is not None:
            log.stable_snapshot_to(ready.snapshot.meta.index)
            log.applied_to(ready.snapshot.meta.index)
        if ready.committed_entries:
            log.applied_to(ready.committed_entries[-1].index)

    # -- inspection --

    @property
    def id(self) -> str:
        """This node's id."""
        return self.raft.id

    def status(self) -> Status:
        """The current term, role, leader, commit and apply positions and voters."""
        raft = self.raft
        return Status(
            id=raft.id,
            term=raft.term,
            vote=raft.vote,
            commit=raft.log.committed,
            applied=raft.log.applied,
            leader=raft.leader,
            role=raft.role,
            voters=raft.tracker.voters,
            last_index=raft.log.last_index(),
            match_by_voter={n: p.match for n, p in sorted(raft.tracker.progress.items())},
        )

    def soft_state(self) -> SoftState:
        """The known leader and this node's role."""
        return self.raft.soft_state()

    def hard_state(self) -> HardState:
        """Term, vote and commit index as they stand (durable once persisted)."""
        return self.raft.hard_state()


def refusal(message: Message, self_id: str) -> str | None:
    """Why :meth:`RawNode.step` of node ``self_id`` would refuse ``message`` (no correct peer
    sends it), or None. Decides it before the message can touch any state, so a driver can
    count such a message as malformed and step the others outside any ``except``."""
    if message.type in LOCAL_MESSAGE_TYPES:
        return f"{message.type.name} is a local message and cannot be received"
    if message.sender is None or message.sender == self_id:
        return f"{message.type.name} with sender {message.sender!r} refused"
    if message.type is MessageType.APP:
        return _append_refusal(message)
    if message.type is MessageType.PROP:
        for entry in message.entries:
            if entry.kind is EntryKind.CONF_CHANGE:
                try:
                    decode_conf_change(entry.data)  # here, not at every replica's apply
                except DecodeError as error:
                    return f"a proposed membership change does not decode: {error}"
    return None


def _append_refusal(message: Message) -> str | None:
    previous_index, previous_term = message.index, message.log_term
    for entry in message.entries:
        if entry.index != previous_index + 1 or not previous_term <= entry.term <= message.term:
            return f"append entries do not follow on at index {entry.index}"
        previous_index, previous_term = entry.index, entry.term
    return None
