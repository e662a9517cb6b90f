"""Building blocks of the core: MemoryStorage, the log with its unstable tail, flow control and
the read-round bookkeeping."""

from __future__ import annotations

import pytest

from crdtstream.raft.log import RaftLog
from crdtstream.raft.progress import Inflights, Progress, ProgressState, ProgressTracker, VoteResult
from crdtstream.raft.read_only import ReadOnly, decode_round, encode_round
from crdtstream.raft.storage import (
    LogCompactedError,
    LogUnavailableError,
    MemoryStorage,
    SnapshotOutOfDateError,
    limit_size,
)
from crdtstream.raft.types import Entry, EntryKind, Snapshot, SnapshotMeta


def stored(*terms: int) -> MemoryStorage:
    storage = MemoryStorage(("n1", "n2", "n3"))
    storage.append([Entry(t, i, EntryKind.NORMAL, b"x") for i, t in enumerate(terms, 1)])
    return storage


# -- MemoryStorage --


def test_storage_reads_terms_and_entries_and_refuses_out_of_range() -> None:
    storage = stored(1, 1, 2)
    assert (storage.first_index(), storage.last_index()) == (1, 3)
    assert [storage.term(i) for i in range(4)] == [0, 1, 1, 2]
    assert [e.index for e in storage.entries(1, 4)] == [1, 2, 3]
    with pytest.raises(LogUnavailableError):
        storage.term(4)
    with pytest.raises(LogUnavailableError):
        storage.entries(2, 5)
    with pytest.raises(LogCompactedError):
        storage.entries(0, 2)


def test_storage_append_replaces_the_tail_from_the_first_new_index() -> None:
    storage = stored(1, 1, 2)
    storage.append([Entry(3, 2), Entry(3, 3), Entry(3, 4)])
    assert [storage.term(i) for i in range(1, 5)] == [1, 3, 3, 3]
    with pytest.raises(ValueError, match="gap"):
        storage.append([Entry(3, 9)])


def test_storage_compaction_keeps_the_term_of_the_compacted_index() -> None:
    storage = stored(1, 2, 2, 3)
    storage.create_snapshot(3, ("n1", "n2"), b"image")
    storage.compact(3)
    assert (storage.first_index(), storage.last_index(), storage.term(3)) == (4, 4, 2)
    assert storage.snapshot().meta == SnapshotMeta(3, 2, ("n1", "n2"))
    with pytest.raises(LogCompactedError):
        storage.term(2)
    with pytest.raises(LogCompactedError):
        storage.compact(3)
    storage.append([Entry(1, 2)])  # entirely covered by the snapshot: ignored
    assert storage.last_index() == 4


def test_storage_apply_snapshot_replaces_everything_and_refuses_older() -> None:
    storage = stored(1, 1)
    snapshot = Snapshot(SnapshotMeta(10, 4, ("n1",)), b"s")
    storage.apply_snapshot(snapshot)
    assert (storage.first_index(), storage.last_index(), storage.term(10)) == (11, 10, 4)
    assert storage.initial_state()[1] == ("n1",)
    with pytest.raises(SnapshotOutOfDateError):
        storage.apply_snapshot(Snapshot(SnapshotMeta(10, 4, ("n1",)), b"s"))


def test_limit_size_keeps_at_least_one_entry() -> None:
    entries = [Entry(1, i, EntryKind.NORMAL, b"x" * 100) for i in range(1, 6)]
    assert len(limit_size(entries, 1)) == 1
    assert len(limit_size(entries, 250)) == 2
    assert len(limit_size(entries, None)) == 5


# -- RaftLog --


def test_log_combines_stable_and_unstable_entries() -> None:
    log = RaftLog(stored(1, 1))
    log.append([Entry(2, 3), Entry(2, 4)])
    assert [e.index for e in log.unstable_entries()] == [3, 4]
    assert [e.term for e in log.slice(1, 5)] == [1, 1, 2, 2]
    assert [e.index for e in log.slice(2, 5, max_bytes=1)] == [2]
    log.stable_to(4, 2)
    assert log.unstable_entries() == []
    log.stable_to(4, 1)  # a stale acknowledgement of a replaced entry changes nothing


def test_log_append_below_commit_is_a_bug() -> None:
    log = RaftLog(stored(1, 1, 1))
    log.commit_to(2)
    with pytest.raises(RuntimeError):
        log.append([Entry(2, 2)])


def test_maybe_append_only_on_match_and_truncates_only_conflicts() -> None:
    log = RaftLog(stored(1, 1, 2))
    assert log.maybe_append(3, 1, 0, [Entry(2, 4)]) is None  # previous term mismatch
    assert log.maybe_append(1, 1, 2, [Entry(1, 2)]) == 2  # already held: no truncation
    assert log.last_index() == 3
    assert log.committed == 2
    assert log.maybe_append(2, 1, 3, [Entry(3, 3), Entry(3, 4)]) == 4
    assert [log.term(i) for i in range(1, 5)] == [1, 1, 3, 3]
    assert log.committed == 3


@pytest.mark.parametrize(
    ("index", "term", "expected"),
    [(6, 3, (6, 3)), (6, 2, (3, 2)), (6, 1, (1, 1)), (6, 0, (0, 0)), (9, 2, (9, 0))],
)
def test_find_conflict_by_term(index: int, term: int, expected: tuple[int, int]) -> None:
    log = RaftLog(stored(1, 2, 2, 3, 3, 3))
    assert log.find_conflict_by_term(index, term) == expected


def test_commit_requires_an_entry_of_the_given_term() -> None:
    log = RaftLog(stored(1, 2))
    assert not log.maybe_commit(2, 3)
    assert log.maybe_commit(2, 2)
    assert log.committed == 2
    assert not log.maybe_commit(1, 1)  # never backwards


def test_committed_entries_are_handed_out_once() -> None:
    log = RaftLog(stored(1, 1, 1))
    log.commit_to(2)
    assert [e.index for e in log.next_committed_entries(None)] == [1, 2]
    log.applying_to(2)
    assert log.next_committed_entries(None) == []
    assert not log.has_next_committed_entries()
    log.commit_to(3)
    assert [e.index for e in log.next_committed_entries(None)] == [3]


def test_restore_from_snapshot() -> None:
    log = RaftLog(stored(1, 1))
    log.restore(Snapshot(SnapshotMeta(7, 3, ("n1",)), b""))
    assert (log.first_index(), log.last_index(), log.committed, log.term(7)) == (8, 7, 7, 3)
    with pytest.raises(LogCompactedError):
        log.term(6)


# -- flow control --


def test_inflights_are_bounded_and_freed_in_order() -> None:
    inflights = Inflights(3)
    for last in (5, 7, 9):
        inflights.add(last)
    assert inflights.full()
    with pytest.raises(RuntimeError):
        inflights.add(11)
    inflights.free_le(7)
    assert inflights.count() == 1
    inflights.free_first_one()
    assert inflights.count() == 0


def test_progress_probe_sends_one_at_a_time_and_replicate_streams() -> None:
    progress = Progress(match=0, next=5, inflights=Inflights(2))
    assert not progress.is_paused()
    progress.sent_entries(3, 5)
    assert progress.is_paused()
    assert progress.next == 5  # a probe does not advance next optimistically
    assert progress.maybe_update(7)
    progress.become_replicate()
    assert (progress.state, progress.next) == (ProgressState.REPLICATE, 8)
    progress.sent_entries(2, 8)
    progress.sent_entries(2, 10)
    assert (progress.next, progress.is_paused()) == (12, True)


def test_progress_rejection_handling() -> None:
    progress = Progress(match=3, next=10, inflights=Inflights(4))
    progress.become_replicate()
    progress.next = 10
    assert not progress.maybe_decrease_to(2, 0)  # stale: below the match
    assert progress.maybe_decrease_to(8, 0)
    assert progress.next == 4  # back to just after the match
    progress.become_probe()
    progress.next = 9
    assert not progress.maybe_decrease_to(5, 0)  # not the probe we sent
    assert progress.maybe_decrease_to(8, 5)
    assert progress.next == 6  # the follower's hint


def test_snapshot_state_resumes_probing_after_it() -> None:
    progress = Progress(match=1, next=2, inflights=Inflights(4))
    progress.become_snapshot(50)
    assert progress.is_paused()
    progress.become_probe()
    assert progress.next == 51


def test_tracker_quorum_and_votes() -> None:
    tracker = ProgressTracker(4)
    tracker.set_voters(["n1", "n2", "n3", "n4", "n5"], 1)
    for node_id, match in zip(tracker.voters, (9, 7, 5, 3, 1), strict=True):
        tracker.progress[node_id].match = match
    assert tracker.committed_index() == 5
    tracker.record_vote("n1", True)
    tracker.record_vote("n2", False)
    assert tracker.tally_votes() == (1, 1, VoteResult.PENDING)
    tracker.record_vote("n2", True)  # only the first answer counts
    tracker.record_vote("n3", False)
    tracker.record_vote("n4", False)
    assert tracker.tally_votes() == (1, 3, VoteResult.LOST)


# -- read rounds --


def test_round_context_round_trips_and_rejects_other_bytes() -> None:
    assert decode_round(encode_round(42)) == 42
    assert decode_round(b"short") is None


def test_reads_are_released_by_a_majority_of_acks_of_their_round() -> None:
    reads = ReadOnly(max_pending=10)
    reads.add(5, b"a", None)
    reads.start_round()
    reads.add(5, b"b", None)  # joins round 1: its heartbeats are not handed out yet
    reads.messages_handed_out()
    reads.add(6, b"c", "n2")  # must wait for round 2
    voters = ("n1", "n2", "n3")
    assert reads.release_confirmed(voters, "n1", 2) == []
    reads.ack("n2", encode_round(1))
    assert [r.request_ctx for r in reads.release_confirmed(voters, "n1", 2)] == [b"a", b"b"]
    assert reads.needs_round()
    reads.ack("n3", encode_round(7))  # a round never sent is ignored
    assert reads.release_confirmed(voters, "n1", 2) == []


def test_read_queue_is_bounded() -> None:
    reads = ReadOnly(max_pending=2)
    assert reads.add(1, b"a", None)
    assert reads.add(1, b"b", None)
    assert not reads.add(1, b"c", None)
