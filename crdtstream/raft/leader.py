"""The leader's side: proposals, replication with flow control, commitment, reads, transfer.

Functions of a :class:`~crdtstream.raft.raft.Raft` in the leader role (etcd-io/raft
``stepLeader``, ``sendAppend``, ``bcastHeartbeat``). Pure, like the rest of the core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from crdtstream.errors import NotLeaderError, UnavailableError
from crdtstream.raft.progress import Progress, ProgressState
from crdtstream.raft.types import (
    ENTRY_OVERHEAD_BYTES,
    Entry,
    EntryKind,
    Message,
    MessageType,
    Role,
)

if TYPE_CHECKING:
    from crdtstream.raft.raft import Raft

__all__ = [
    "after_conf_change",
    "append_entries",
    "broadcast_append",
    "broadcast_heartbeat",
    "mark_all_for_append",
    "maybe_commit",
    "send_append",
    "send_marked_appends",
    "step_leader",
]

_SNAPSHOT_PATIENCE_ELECTIONS = 2
"""A snapshot unanswered for this many election timeouts is presumed lost and re-probed."""


def append_entries(raft: Raft, payloads: Sequence[tuple[EntryKind, bytes]]) -> None:
    """Append entries of the current term to the leader's log and count our own copy."""
    first = raft.log.last_index() + 1
    entries = [
        Entry(raft.term, first + offset, kind, data) for offset, (kind, data) in enumerate(payloads)
    ]
    last = raft.log.append(entries)
    raft.tracker.progress[raft.id].maybe_update(last)
    maybe_commit(raft)


def maybe_commit(raft: Raft) -> bool:
    """Advance the commit index to what a majority holds, if that entry is of our term."""
    return raft.log.maybe_commit(raft.tracker.committed_index(), raft.term)


def step_leader(raft: Raft, message: Message) -> None:
    """Leader: handle local triggers, proposals, reads, and followers' answers."""
    kind = message.type
    if kind is MessageType.BEAT:
        broadcast_heartbeat(raft)
    elif kind is MessageType.CHECK_QUORUM:
        _check_quorum(raft)
    elif kind is MessageType.PROP:
        _propose(raft, message)
    elif kind is MessageType.READ_INDEX:
        _read_index(raft, message)
    elif kind is MessageType.TRANSFER_LEADER:
        _transfer_leadership(raft, message.context.decode(errors="replace"))
    else:
        progress = raft.tracker.progress.get(message.sender or "")
        if progress is not None:
            _step_from_follower(raft, message, progress)


def _step_from_follower(raft: Raft, message: Message, progress: Progress) -> None:
    kind = message.type
    if kind is MessageType.APP_RESP:
        progress.recent_active = True
        _handle_append_response(raft, message, progress)
    elif kind is MessageType.HEARTBEAT_RESP:
        _handle_heartbeat_response(raft, message, progress)
    elif kind is MessageType.SNAPSHOT_STATUS:
        _handle_snapshot_status(message, progress)
    elif kind is MessageType.UNREACHABLE and progress.state is ProgressState.REPLICATE:
        progress.become_probe()  # stop streaming optimistically into the void


def _check_quorum(raft: Raft) -> None:
    if not raft.tracker.quorum_active(raft.id):
        raft.become_follower(raft.term, None)
        return
    for node_id, progress in raft.tracker.progress.items():
        if node_id != raft.id:
            progress.recent_active = False


def _propose(raft: Raft, message: Message) -> None:
    local = message.sender == raft.id
    if raft.lead_transferee is not None:
        if local:
            raise NotLeaderError("leadership is being transferred", raft.lead_transferee)
        return
    payloads: list[tuple[EntryKind, bytes]] = []
    for offset, entry in enumerate(message.entries):
        if entry.kind is EntryKind.CONF_CHANGE:
            if raft.pending_conf_index > raft.log.applied:
                # One membership change at a time: a second one becomes a no-op entry, which
                # the proposer sees never applied (etcd-io/raft does the same).
                payloads.append((EntryKind.EMPTY, b""))
                continue
            raft.pending_conf_index = raft.log.last_index() + offset + 1
        payloads.append((entry.kind, entry.data))
    if not payloads:
        return
    size = sum(len(data) for _, data in payloads) + ENTRY_OVERHEAD_BYTES * len(payloads)
    if (
        raft.uncommitted_bytes > 0
        and raft.uncommitted_bytes + size > raft.config.max_uncommitted_bytes
    ):
        # Followers are not keeping up: refuse rather than let the log grow without bound.
        if local:
            raise UnavailableError(
                f"{raft.uncommitted_bytes} bytes of proposals await commit; try again later"
            )
        return
    raft.uncommitted_bytes += size
    append_entries(raft, payloads)
    mark_all_for_append(raft)


# -- replication --


def broadcast_append(raft: Raft) -> None:
    """Send appends (or an empty probe carrying the commit index) to every follower."""
    for node_id in raft.tracker.voters:
        if node_id != raft.id:
            send_append(raft, node_id)


def mark_all_for_append(raft: Raft) -> None:
    """New entries or a new commit index for every follower: send them when the Ready is built.

    Proposals and acknowledgements stepped between two Readies then cost one append per
    follower, not one each (etcd-io/raft gets the same batching from its step loop); the
    commit index rides on that append.
    """
    raft.followers_to_append.update(v for v in raft.tracker.voters if v != raft.id)


def send_marked_appends(raft: Raft) -> None:
    """Send each marked follower what it lacks, as many appends as flow control allows."""
    marked, raft.followers_to_append = raft.followers_to_append, set()
    if raft.role is not Role.LEADER:
        return
    for node_id in sorted(marked):
        if node_id in raft.tracker.progress and send_append(raft, node_id):
            while send_append(raft, node_id, send_if_empty=False):
                pass


def send_append(raft: Raft, to: str, send_if_empty: bool = True) -> bool:
    """Send ``to`` the entries it lacks, a snapshot when they are compacted; True if sent."""
    progress = raft.tracker.progress[to]
    if progress.is_paused():
        return False
    previous_index = progress.next - 1
    try:
        previous_term = raft.log.term(previous_index)
        entries = _entries_for(raft, progress)
    except LookupError:
        return _send_snapshot(raft, to, progress)
    if not entries and not send_if_empty:
        return False
    raft.reply(
        MessageType.APP,
        to,
        log_term=previous_term,
        index=previous_index,
        entries=tuple(entries),
        commit=raft.log.committed,
    )
    progress.sent_entries(len(entries), progress.next)
    raft.followers_to_append.discard(to)  # it has the newest commit index now
    return True


def _entries_for(raft: Raft, progress: Progress) -> list[Entry]:
    if progress.state is ProgressState.REPLICATE and progress.inflights.full():
        return []
    last = raft.log.last_index()
    if progress.next > last:
        return []
    high = min(last + 1, progress.next + raft.config.max_entries_per_append)
    return raft.log.slice(progress.next, high, raft.config.max_append_bytes)


def _send_snapshot(raft: Raft, to: str, progress: Progress) -> bool:
    if not progress.recent_active:
        return False  # do not ship a snapshot to a node that may be down
    snapshot = raft.log.snapshot()
    if snapshot.is_empty():
        raise RuntimeError("entries are compacted but there is no snapshot")
    progress.become_snapshot(snapshot.meta.index)
    raft.reply(MessageType.SNAP, to, snapshot=snapshot)
    return True


def _handle_append_response(raft: Raft, message: Message, progress: Progress) -> None:
    to = _sender(message)
    if message.reject:
        hint = message.reject_hint
        if message.log_term > 0:
            hint = raft.log.find_conflict_by_term(message.reject_hint, message.log_term)[0]
        if progress.maybe_decrease_to(message.index, hint):
            if progress.state is ProgressState.REPLICATE:
                progress.become_probe()
            send_append(raft, to)
        return
    if message.index > raft.log.last_index():
        return  # an acknowledgement of entries we never had: not from a correct follower
    was_paused = progress.is_paused()
    if not (
        progress.maybe_update(message.index)
        or (progress.match == message.index and progress.state is ProgressState.PROBE)
    ):
        return
    _advance_state(raft, message.index, progress)
    if maybe_commit(raft):
        _release_parked_reads(raft)
        mark_all_for_append(raft)
    elif was_paused:
        send_append(raft, to)
    # Flow control may now allow several appends at once (probe turned replicate, or many
    # inflights freed): send all that fit, without empty ones.
    while send_append(raft, to, send_if_empty=False):
        pass
    if to == raft.lead_transferee and progress.match == raft.log.last_index():
        raft.reply(MessageType.TIMEOUT_NOW, to)


def _advance_state(raft: Raft, index: int, progress: Progress) -> None:
    if progress.state is ProgressState.PROBE:
        progress.become_replicate()
    elif progress.state is ProgressState.SNAPSHOT and progress.match + 1 >= raft.log.first_index():
        progress.become_probe()
        progress.become_replicate()
    elif progress.state is ProgressState.REPLICATE:
        progress.inflights.free_le(index)


def _handle_snapshot_status(message: Message, progress: Progress) -> None:
    if progress.state is not ProgressState.SNAPSHOT:
        return
    if message.reject:
        progress.pending_snapshot = 0
    progress.become_probe()
    # Wait for the next heartbeat answer before probing, as the follower may need time.
    progress.probe_sent = True


def _sender(message: Message) -> str:
    if message.sender is None:
        raise ValueError("message without a sender")
    return message.sender


# -- heartbeats --


def broadcast_heartbeat(raft: Raft) -> None:
    """Heartbeat every follower, carrying the newest read round (starting one if reads wait)."""
    if raft.read_only.needs_round() and not raft.read_only.round_in_flight():
        raft.read_only.start_round()
    context = raft.read_only.context()
    patience = (
        _SNAPSHOT_PATIENCE_ELECTIONS
        * raft.config.election_timeout_ticks
        // raft.config.heartbeat_ticks
    )
    for node_id, progress in sorted(raft.tracker.progress.items()):
        if node_id == raft.id:
            continue
        if progress.state is ProgressState.SNAPSHOT:
            progress.snapshot_heartbeats += 1
            if progress.snapshot_heartbeats > patience:
                progress.become_probe()  # the snapshot was lost: probe, which re-sends it
        commit = min(progress.match, raft.log.committed)
        raft.reply(MessageType.HEARTBEAT, node_id, commit=commit, context=context)


def _handle_heartbeat_response(raft: Raft, message: Message, progress: Progress) -> None:
    progress.recent_active = True
    progress.probe_sent = False
    if progress.state is ProgressState.REPLICATE and progress.inflights.full():
        progress.inflights.free_first_one()
    if progress.match < raft.log.last_index() or progress.state is ProgressState.PROBE:
        send_append(raft, _sender(message))
    if raft.tracker.is_singleton() or not raft.read_only.pending:
        return
    raft.read_only.ack(_sender(message), message.context)
    _release_confirmed_reads(raft)


# -- reads (§8) --


def _read_index(raft: Raft, message: Message) -> None:
    if raft.tracker.is_singleton():
        _answer_read(raft, message.sender, raft.log.committed, message.context)
    elif raft.log.term_or_zero(raft.log.committed) != raft.term:
        # Until an entry of this term commits we may not know the true commit index (§8).
        if len(raft.parked_reads) < raft.config.max_pending_reads:
            raft.parked_reads.append(message)
        else:
            raft.dropped_reads += 1
    else:
        _queue_read(raft, message)


def _queue_read(raft: Raft, message: Message) -> None:
    in_flight = raft.read_only.round_in_flight()
    if not raft.read_only.add(raft.log.committed, message.context, message.sender):
        raft.dropped_reads += 1
        return
    if not in_flight:
        broadcast_heartbeat(raft)


def _release_parked_reads(raft: Raft) -> None:
    if not raft.parked_reads or raft.log.term_or_zero(raft.log.committed) != raft.term:
        return
    parked, raft.parked_reads = raft.parked_reads, []
    for message in parked:
        _read_index(raft, message)


def _release_confirmed_reads(raft: Raft) -> None:
    released = raft.read_only.release_confirmed(raft.tracker.voters, raft.id, raft.tracker.quorum())
    for read in released:
        _answer_read(raft, read.requester, read.index, read.request_ctx)
    if released and raft.read_only.needs_round():
        broadcast_heartbeat(raft)


def _answer_read(raft: Raft, requester: str | None, index: int, request_ctx: bytes) -> None:
    if requester is None or requester == raft.id:
        raft.add_read_state(index, request_ctx)
    else:
        raft.reply(MessageType.READ_INDEX_RESP, requester, index=index, context=request_ctx)


# -- leadership transfer and membership --


def _transfer_leadership(raft: Raft, transferee: str) -> None:
    progress = raft.tracker.progress.get(transferee)
    if progress is None or raft.lead_transferee == transferee or transferee == raft.id:
        return  # not a voter, already under way, or ourselves
    raft.election_elapsed = 0  # the transfer must finish within one election timeout
    raft.lead_transferee = transferee
    if progress.match == raft.log.last_index():
        raft.reply(MessageType.TIMEOUT_NOW, transferee)
    else:
        send_append(raft, transferee)


def after_conf_change(raft: Raft) -> None:
    """The voter set changed while we lead: step down if removed, else recount and replicate."""
    if raft.id not in raft.tracker.progress:
        raft.become_follower(raft.term, None)
        return
    if raft.lead_transferee is not None and raft.lead_transferee not in raft.tracker.progress:
        raft.lead_transferee = None
    if maybe_commit(raft):
        _release_parked_reads(raft)
        mark_all_for_append(raft)
    else:
        for node_id in raft.tracker.voters:
            if node_id != raft.id:
                send_append(raft, node_id, send_if_empty=False)
    if raft.role is Role.LEADER:
        _release_confirmed_reads(raft)
