"""Followers and candidates: forwarding, the receiving side of replication, vote counting.

Functions of a :class:`~crdtstream.raft.raft.Raft` in the follower, pre-candidate and candidate
roles (etcd-io/raft ``stepFollower``, ``stepCandidate``, ``handleAppendEntries``). Pure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crdtstream.errors import NotLeaderError
from crdtstream.raft.progress import VoteResult
from crdtstream.raft.types import Message, MessageType, Role, Snapshot

if TYPE_CHECKING:
    from crdtstream.raft.raft import Raft

__all__ = [
    "handle_append_entries",
    "handle_heartbeat",
    "handle_snapshot",
    "restore",
    "step_candidate",
    "step_follower",
]


def step_follower(raft: Raft, message: Message) -> None:
    """Follower: forward proposals and reads, follow the leader's appends and heartbeats."""
    kind = message.type
    if kind in (MessageType.PROP, MessageType.READ_INDEX, MessageType.TRANSFER_LEADER):
        _forward_to_leader(raft, message)
    elif kind in (MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP):
        raft.election_elapsed = 0
        raft.leader = message.sender
        _handle_from_leader(raft, message)
    elif kind is MessageType.TIMEOUT_NOW:
        raft.hup(transfer=True)
    elif kind is MessageType.READ_INDEX_RESP:
        raft.add_read_state(message.index, message.context)


def _forward_to_leader(raft: Raft, message: Message) -> None:
    if raft.leader is None:
        if message.type is MessageType.PROP and message.sender == raft.id:
            raise NotLeaderError("no leader is known; the proposal was dropped")
        raft.dropped_reads += message.type is MessageType.READ_INDEX
        return
    # Forwarded requests travel with term 0: the leader treats them like local ones.
    raft.send(
        Message(
            message.type,
            message.sender,
            raft.leader,
            0,
            entries=message.entries,
            context=message.context,
        )
    )


def _handle_from_leader(raft: Raft, message: Message) -> None:
    if message.type is MessageType.APP:
        handle_append_entries(raft, message)
    elif message.type is MessageType.HEARTBEAT:
        handle_heartbeat(raft, message)
    else:
        handle_snapshot(raft, message)


def step_candidate(raft: Raft, message: Message) -> None:
    """Candidate and pre-candidate: count votes; a leader of our term ends the election."""
    kind = message.type
    if kind is MessageType.PROP:
        if message.sender == raft.id:
            raise NotLeaderError("an election is in progress; the proposal was dropped")
    elif kind in (MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP):
        raft.become_follower(message.term, message.sender)
        _handle_from_leader(raft, message)
    elif kind is MessageType.READ_INDEX:
        raft.dropped_reads += 1
    elif kind is _expected_vote_response(raft):
        result = raft.poll(_required(message.sender), not message.reject)
        if result is VoteResult.WON:
            raft._won_election()
        elif result is VoteResult.LOST:
            raft.become_follower(raft.term, None)


def _expected_vote_response(raft: Raft) -> MessageType:
    if raft.role is Role.PRE_CANDIDATE:
        return MessageType.PRE_VOTE_RESP
    return MessageType.VOTE_RESP


def _required(node_id: str | None) -> str:
    if node_id is None:
        raise ValueError("message without a sender")
    return node_id


# -- the receiving side of replication --


def handle_append_entries(raft: Raft, message: Message) -> None:
    """AppendEntries (Figure 2): accept, or reject with a hint for fast backtracking."""
    if message.index < raft.log.committed:
        raft.reply(MessageType.APP_RESP, message.sender, index=raft.log.committed)
        return
    last_new = raft.log.maybe_append(
        message.index, message.log_term, message.commit, message.entries
    )
    if last_new is not None:
        raft.reply(MessageType.APP_RESP, message.sender, index=last_new)
        return
    hint_index = min(message.index, raft.log.last_index())
    hint_index, hint_term = raft.log.find_conflict_by_term(hint_index, message.log_term)
    raft.reply(
        MessageType.APP_RESP,
        message.sender,
        index=message.index,
        reject=True,
        reject_hint=hint_index,
        log_term=hint_term,
    )


def handle_heartbeat(raft: Raft, message: Message) -> None:
    """Learn the commit index (never past our log) and echo the read round."""
    raft.log.commit_to(min(message.commit, raft.log.last_index()))
    raft.reply(MessageType.HEARTBEAT_RESP, message.sender, context=message.context)


def handle_snapshot(raft: Raft, message: Message) -> None:
    """InstallSnapshot: adopt a snapshot newer than our commit index."""
    snapshot = message.snapshot
    if snapshot is not None and restore(raft, snapshot):
        raft.reply(MessageType.APP_RESP, message.sender, index=raft.log.last_index())
    else:
        raft.reply(MessageType.APP_RESP, message.sender, index=raft.log.committed)


def restore(raft: Raft, snapshot: Snapshot) -> bool:
    """Replace our log by ``snapshot`` unless it adds nothing we lack."""
    meta = snapshot.meta
    if meta.index <= raft.log.committed:
        return False
    if raft.role is not Role.FOLLOWER:
        raise RuntimeError("only a follower restores a snapshot")
    if raft.log.match_term(meta.index, meta.term):
        # We hold the entry already: fast-forward the commit index, keep the log.
        raft.log.commit_to(meta.index)
        return False
    raft.log.restore(snapshot)
    raft.tracker.set_voters(meta.voters, raft.log.last_index() + 1)
    return True
