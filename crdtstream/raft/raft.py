"""The Raft state machine: terms, roles, transitions, ticks, elections and membership.

File-level rules: pure. No clock (time is ``tick()``), no I/O, randomness only from the injected
``random.Random``. Output is data: ``messages`` and ``read_states`` accumulate here and leave
through :class:`~crdtstream.raft.rawnode.RawNode`'s ``Ready``.

Roles are swapped step and tick functions (etcd-io/raft ``raft.go``): ``step_follower`` and
``step_candidate`` (also for pre-candidates) in :mod:`.follower`, ``step_leader`` in
:mod:`.leader`, with ``tick_election`` or ``tick_heartbeat``. Transitions are the ``become_*``
methods.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from crdtstream.config import RaftConfig
from crdtstream.errors import StorageError
from crdtstream.ids import validate_node_id
from crdtstream.raft import leader
from crdtstream.raft.follower import step_candidate, step_follower
from crdtstream.raft.log import RaftLog
from crdtstream.raft.progress import ProgressTracker, VoteResult
from crdtstream.raft.read_only import ReadOnly
from crdtstream.raft.storage import Storage
from crdtstream.raft.types import (
    ENTRY_OVERHEAD_BYTES,
    ConfChange,
    ConfChangeKind,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    ReadState,
    Role,
    Snapshot,
    SoftState,
)

__all__ = ["CAMPAIGN_TRANSFER", "Raft"]

CAMPAIGN_TRANSFER = b"transfer"
"""Vote context of an election started by leadership transfer: it overrides the leader lease."""

_VOTE_RESPONSE = {
    MessageType.VOTE: MessageType.VOTE_RESP,
    MessageType.PRE_VOTE: MessageType.PRE_VOTE_RESP,
}

StepFunction = Callable[["Raft", Message], None]


class Raft:
    """One Raft peer. Drive it through :class:`~crdtstream.raft.rawnode.RawNode`."""

    def __init__(
        self, node_id: str, storage: Storage, config: RaftConfig, rng: random.Random, applied: int
    ) -> None:
        self.id = validate_node_id(node_id)
        self.config = config
        self.rng = rng
        self.log = RaftLog(storage)
        self.term = 0
        self.vote: str | None = None
        self.leader: str | None = None
        self.role = Role.FOLLOWER
        self.tracker = ProgressTracker(config.max_inflight_appends)
        self.read_only = ReadOnly(config.max_pending_reads)
        self.parked_reads: list[Message] = []
        self.messages: list[Message] = []
        self.followers_to_append: set[str] = set()
        """Followers owed new entries or the new commit index at the next Ready."""
        self.read_states: list[ReadState] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_timeout_ticks
        self.lead_transferee: str | None = None
        self.pending_conf_index = 0
        self.uncommitted_bytes = 0
        self.dropped_reads = 0
        self._step: StepFunction = step_follower
        self._tick: Callable[[], None] = self.tick_election
        hard_state, voters = storage.initial_state()
        self.tracker.set_voters(voters, self.log.last_index() + 1)
        if not hard_state.is_empty():
            self._load_hard_state(hard_state)
        if applied > 0:
            self.log.applied_to(min(applied, self.log.committed))
        self.become_follower(self.term, None)

    def _load_hard_state(self, state: HardState) -> None:
        if state.commit > self.log.last_index():
            raise StorageError(
                f"hard state commit {state.commit} is beyond the last stored entry "
                f"{self.log.last_index()}: the log lost entries that were acknowledged"
            )
        # A stored snapshot is committed by definition, even if the hard state written after
        # it was lost in a crash.
        self.log.committed = max(self.log.committed, state.commit)
        self.term = state.term
        self.vote = state.vote

    # -- reported state --

    def hard_state(self) -> HardState:
        """What must be durable before this node's messages leave."""
        return HardState(self.term, self.vote, self.log.committed)

    def soft_state(self) -> SoftState:
        """The known leader and our role."""
        return SoftState(self.leader, self.role)

    def promotable(self) -> bool:
        """True when this node is a voter and may campaign."""
        return self.id in self.tracker.progress

    # -- sending --

    def send_marked_appends(self) -> None:
        """Leader: send the appends that proposals and commits since the last Ready owe."""
        if self.followers_to_append:
            leader.send_marked_appends(self)

    def send(self, message: Message) -> None:
        """Queue ``message`` for the next Ready."""
        self.messages.append(message)

    def reply(
        self,
        message_type: MessageType,
        to: str | None,
        *,
        log_term: int = 0,
        index: int = 0,
        entries: tuple[Entry, ...] = (),
        commit: int = 0,
        reject: bool = False,
        reject_hint: int = 0,
        context: bytes = b"",
        snapshot: Snapshot | None = None,
    ) -> None:
        """Queue a message of our current term to ``to``."""
        self.messages.append(
            Message(
                message_type,
                self.id,
                to,
                self.term,
                log_term,
                index,
                entries,
                commit,
                reject,
                reject_hint,
                context,
                snapshot,
            )
        )

    # -- transitions --

    def reset(self, term: int) -> None:
        """Common state reset on every role change."""
        if self.term != term:
            self.term = term
            self.vote = None
        self.leader = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.config.election_timeout_ticks + self.rng.randrange(
            self.config.election_timeout_ticks
        )
        self.lead_transferee = None
        self.tracker.reset_votes()
        self.tracker.reset_all(self.id, self.log.last_index())
        self.pending_conf_index = 0
        self.uncommitted_bytes = 0
        self.followers_to_append = set()
        self.read_only = ReadOnly(self.config.max_pending_reads)
        self.parked_reads = []

    def become_follower(self, term: int, leader_id: str | None) -> None:
        """Follow ``leader_id`` (or nobody yet) in ``term``."""
        self.reset(term)
        self._step = step_follower
        self._tick = self.tick_election
        self.leader = leader_id
        self.role = Role.FOLLOWER

    def become_pre_candidate(self) -> None:
        """Ask for pre-votes without touching term or vote (thesis §9.6)."""
        if self.role is Role.LEADER:
            raise RuntimeError("a leader cannot become a pre-candidate")
        self.tracker.reset_votes()
        self._step = step_candidate
        self._tick = self.tick_election
        self.leader = None
        self.role = Role.PRE_CANDIDATE

    def become_candidate(self) -> None:
        """Start a new term and vote for ourselves."""
        if self.role is Role.LEADER:
            raise RuntimeError("a leader cannot become a candidate")
        self.reset(self.term + 1)
        self._step = step_candidate
        self._tick = self.tick_election
        self.vote = self.id
        self.role = Role.CANDIDATE

    def become_leader(self) -> None:
        """Lead this term: replicate to everyone and append an empty entry (§8)."""
        if self.role is Role.FOLLOWER:
            raise RuntimeError("a follower cannot become leader without an election")
        self.reset(self.term)
        self._step = leader.step_leader
        self._tick = self.tick_heartbeat
        self.leader = self.id
        self.role = Role.LEADER
        self.tracker.progress[self.id].become_replicate()
        # A configuration change in the uncommitted tail may be pending: allow no new one
        # until everything up to here is applied.
        self.pending_conf_index = self.log.last_index()
        leader.append_entries(self, [(EntryKind.EMPTY, b"")])

    # -- ticks --

    def tick(self) -> None:
        """Advance time by one tick."""
        self._tick()

    def tick_election(self) -> None:
        """Followers and candidates: campaign once the randomized election timeout passes."""
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(MessageType.HUP, self.id))

    def tick_heartbeat(self) -> None:
        """Leaders: heartbeats, the CheckQuorum test and the transfer deadline."""
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_timeout_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum:
                self.step(Message(MessageType.CHECK_QUORUM, self.id))
            if self.role is Role.LEADER and self.lead_transferee is not None:
                self.lead_transferee = None  # the transfer did not finish in time
        if self.role is not Role.LEADER:
            return
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self.step(Message(MessageType.BEAT, self.id))

    # -- elections --

    def hup(self, transfer: bool = False) -> None:
        """Start an election (a pre-election first when PreVote is on, unless transferring)."""
        if self.role is Role.LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_change():
            return  # the voter set may be about to change under us
        if self.config.pre_vote and not transfer:
            self.campaign(pre_vote=True)
        else:
            self.campaign(pre_vote=False, transfer=transfer)

    def _has_unapplied_conf_change(self) -> bool:
        low, high = self.log.applied + 1, self.log.committed + 1
        if low >= high:
            return False
        entries = self.log.slice(max(low, self.log.first_index()), high)
        return any(entry.kind is EntryKind.CONF_CHANGE for entry in entries)

    def campaign(self, pre_vote: bool, transfer: bool = False) -> None:
        """Ask every voter for a (pre-)vote at the next term."""
        if pre_vote:
            self.become_pre_candidate()
            vote_type, term = MessageType.PRE_VOTE, self.term + 1
        else:
            self.become_candidate()
            vote_type, term = MessageType.VOTE, self.term
        if self.poll(self.id, True) is VoteResult.WON:
            self._won_election()
            return
        context = CAMPAIGN_TRANSFER if transfer else b""
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for voter in self.tracker.voters:
            if voter != self.id:
                self.send(
                    Message(vote_type, self.id, voter, term, last_term, last_index, context=context)
                )

    def poll(self, node_id: str, granted: bool) -> VoteResult:
        """Record a (pre-)vote and return the election's outcome so far."""
        self.tracker.record_vote(node_id, granted)
        return self.tracker.tally_votes()[2]

    def _won_election(self) -> None:
        if self.role is Role.PRE_CANDIDATE:
            self.campaign(pre_vote=False)
        else:
            self.become_leader()
            leader.broadcast_append(self)

    # -- stepping --

    def step(self, message: Message) -> None:
        """Handle one message: term checks common to all roles, then the role's step function."""
        if message.term > self.term and not self._step_higher_term(message):
            return
        if 0 < message.term < self.term:
            self._step_lower_term(message)
            return
        if message.type is MessageType.HUP:
            self.hup()
        elif message.type in (MessageType.VOTE, MessageType.PRE_VOTE):
            self._handle_vote_request(message)
        else:
            self._step(self, message)

    def _in_lease(self) -> bool:
        return (
            self.config.check_quorum
            and self.leader is not None
            and self.election_elapsed < self.config.election_timeout_ticks
        )

    def _step_higher_term(self, message: Message) -> bool:
        """A message from a later term; False when it is to be ignored."""
        # §6: a node that heard from a leader within the minimum election timeout ignores
        # votes, so a partitioned node rejoining cannot depose a healthy leader.
        if (
            message.type in (MessageType.VOTE, MessageType.PRE_VOTE)
            and message.context != CAMPAIGN_TRANSFER
            and self._in_lease()
        ):
            return False
        if message.type is MessageType.PRE_VOTE:
            return True  # a pre-vote never changes our term
        if message.type is MessageType.PRE_VOTE_RESP and not message.reject:
            return True  # granted pre-votes carry the term we are about to campaign for
        if message.type in (MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP):
            self.become_follower(message.term, message.sender)
        else:
            self.become_follower(message.term, None)
        return True

    def _step_lower_term(self, message: Message) -> None:
        if (self.config.check_quorum or self.config.pre_vote) and message.type in (
            MessageType.HEARTBEAT,
            MessageType.APP,
        ):
            # A leader cut off long enough to be deposed learns the newer term from this, instead
            # of pinging us forever while its term blocks everyone else.
            self.reply(MessageType.APP_RESP, message.sender)
        elif message.type is MessageType.PRE_VOTE:
            # Answer, do not drop: a pre-candidate at a lower term must learn it is behind.
            self.reply(MessageType.PRE_VOTE_RESP, message.sender, reject=True)

    def _handle_vote_request(self, message: Message) -> None:
        can_vote = (
            self.vote == message.sender
            or (self.vote is None and self.leader is None)
            or (message.type is MessageType.PRE_VOTE and message.term > self.term)
        )
        response = _VOTE_RESPONSE[message.type]
        if can_vote and self.log.is_up_to_date(message.index, message.log_term):
            # The answer carries the candidate's term so it is not discarded as stale.
            self.send(Message(response, self.id, message.sender, message.term))
            if message.type is MessageType.VOTE:
                self.election_elapsed = 0
                self.vote = message.sender
        else:
            self.reply(response, message.sender, reject=True)

    # -- membership --

    def apply_conf_change(self, change: ConfChange) -> tuple[str, ...]:
        """Apply a committed single-server change; returns the new voter set."""
        voters = set(self.tracker.progress)
        if change.kind is ConfChangeKind.ADD_VOTER:
            voters.add(change.node_id)
        else:
            voters.discard(change.node_id)
        self.tracker.set_voters(voters, self.log.last_index() + 1)
        if change.kind is ConfChangeKind.ADD_VOTER and change.node_id in self.tracker.progress:
            # A new voter counts as active, or CheckQuorum could depose us before it answers.
            self.tracker.progress[change.node_id].recent_active = True
        if self.role is Role.LEADER:
            leader.after_conf_change(self)
        return self.tracker.voters

    def committed_handed_out(self, entries: list[Entry]) -> None:
        """Committed entries left for applying: they no longer count as uncommitted."""
        if self.role is Role.LEADER and entries:
            size = sum([len(e.data) for e in entries]) + ENTRY_OVERHEAD_BYTES * len(entries)
            self.uncommitted_bytes = max(0, self.uncommitted_bytes - size)

    # -- reads --

    def add_read_state(self, index: int, request_ctx: bytes) -> None:
        """A read confirmed at ``index``: the caller serves it once applied reaches it."""
        self.read_states.append(ReadState(index, request_ctx))
