"""Cluster-level behaviour of the core beyond the paper's rules: restarts, snapshots, membership,
leadership transfer, proposal forwarding, flow control, liveness after faults, misuse."""

from __future__ import annotations

import contextlib
import random

import pytest
from harness import Cluster, flush, make_node

from crdtstream.config import RaftConfig
from crdtstream.errors import DecodeError, NotLeaderError, StorageError, UnavailableError
from crdtstream.raft.rawnode import RawNode
from crdtstream.raft.storage import MemoryStorage
from crdtstream.raft.types import (
    LOCAL_MESSAGE_TYPES,
    ConfChange,
    ConfChangeKind,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    Role,
    Snapshot,
    SnapshotMeta,
)

IDS = ("n1", "n2", "n3")


def committed_cluster(ids: tuple[str, ...] = IDS, config: RaftConfig | None = None) -> Cluster:
    cluster = Cluster(ids) if config is None else Cluster(ids, config)
    cluster.elect(ids[0])
    return cluster


def test_restart_keeps_term_vote_and_log_and_replays_committed_entries() -> None:
    cluster = committed_cluster()
    cluster.node("n1").propose(b"a")
    cluster.stabilize()
    before = cluster.node("n2").status()
    cluster.restart("n2")
    after = cluster.node("n2").status()
    assert (after.term, after.vote, after.commit, after.last_index) == (
        before.term,
        before.vote,
        before.commit,
        before.last_index,
    )
    assert after.role is Role.FOLLOWER
    cluster.stabilize()
    assert cluster.applied_data("n2") == [b"a"]  # replayed to the fresh state machine


def test_restarted_node_does_not_vote_twice_in_a_term() -> None:
    node, storage = make_node("n2", IDS)
    node.step(Message(MessageType.VOTE, "n1", "n2", 1))
    flush(node, storage)
    cluster = Cluster(())
    cluster.initial_voters = IDS
    cluster.add_peer("n2", storage)
    cluster.node("n2").step(Message(MessageType.VOTE, "n3", "n2", 1))
    [answer] = cluster.node("n2").ready().messages
    assert answer.reject


def test_single_voter_commits_and_reads_at_once() -> None:
    cluster = Cluster(["solo"])
    cluster.elect("solo")
    cluster.node("solo").propose(b"x")
    cluster.node("solo").read_index(b"r")
    cluster.stabilize()
    assert cluster.applied_data("solo") == [b"x"]
    assert [r.request_ctx for r in cluster.peers["solo"].read_states] == [b"r"]


def test_follower_forwards_proposals_to_the_leader() -> None:
    cluster = committed_cluster()
    cluster.node("n3").propose_many([b"p", b"q"])
    cluster.stabilize()
    for node_id in IDS:
        assert cluster.applied_data(node_id) == [b"p", b"q"]


def _compacted_cluster() -> Cluster:
    cluster = committed_cluster()
    cluster.isolate("n3")
    for i in range(5):
        cluster.node("n1").propose(b"%d" % i)
    cluster.stabilize()
    peer = cluster.peers["n1"]
    applied = cluster.node("n1").status().applied
    peer.storage.create_snapshot(applied, peer.voters, b"image")
    peer.storage.compact(applied)
    cluster.heal()
    return cluster


def test_lagging_follower_is_caught_up_by_snapshot() -> None:
    cluster = _compacted_cluster()
    cluster.tick("n1")
    cluster.stabilize()
    n3 = cluster.peers["n3"]
    assert n3.storage.snapshot().data == b"image"
    assert cluster.node("n3").status().commit == cluster.node("n1").status().commit
    cluster.node("n1").propose(b"after")
    cluster.stabilize()
    assert cluster.applied_data("n3")[-1] == b"after"


def _run_dropping_snapshots(cluster: Cluster) -> None:
    """Let everything but snapshots through until nothing moves."""
    for _ in range(10):
        for node_id in sorted(cluster.peers):
            cluster.process_ready(node_id)
        cluster.queues["n3"] = [m for m in cluster.queues["n3"] if m.type is not MessageType.SNAP]
        for node_id in sorted(cluster.peers):
            cluster.deliver(node_id)


def test_lost_snapshot_is_sent_again() -> None:
    cluster = _compacted_cluster()
    cluster.tick("n1")
    _run_dropping_snapshots(cluster)
    assert cluster.node("n1").raft.tracker.progress["n3"].state.value == "snapshot"
    cluster.tick_all(3 * cluster.config.election_timeout_ticks)
    assert cluster.peers["n3"].storage.snapshot().data == b"image"


def test_failed_snapshot_report_returns_to_probing() -> None:
    cluster = _compacted_cluster()
    cluster.tick("n1")
    _run_dropping_snapshots(cluster)
    progress = cluster.node("n1").raft.tracker.progress["n3"]
    assert progress.state.value == "snapshot"
    cluster.node("n1").report_snapshot("n3", succeeded=False)
    assert progress.state.value == "probe"


def test_added_voter_counts_towards_the_quorum() -> None:
    cluster = Cluster(IDS)
    cluster.add_peer("n4")  # bootstrapped with the initial voters, so not yet a voter itself
    cluster.elect("n1")
    cluster.node("n1").propose_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, "n4"))
    cluster.stabilize()
    assert cluster.node("n1").status().voters == ("n1", "n2", "n3", "n4")
    cluster.tick_all(1)  # the next heartbeat finds n4, which catches up and applies the change
    assert cluster.peers["n4"].voters == ("n1", "n2", "n3", "n4")
    cluster.isolate("n2")
    cluster.node("n1").propose(b"needs n3 and n4")
    cluster.isolate("n3")
    cluster.stabilize()
    assert b"needs n3 and n4" not in cluster.applied_data("n1")  # 2 of 4 is no majority
    cluster.heal()
    cluster.tick_all(2)
    assert b"needs n3 and n4" in cluster.applied_data("n4")


def test_only_one_membership_change_at_a_time() -> None:
    cluster = committed_cluster()
    leader = cluster.node("n1")
    leader.propose_conf_change(ConfChange(ConfChangeKind.REMOVE_VOTER, "n3"))
    leader.propose_conf_change(ConfChange(ConfChangeKind.REMOVE_VOTER, "n2"))
    cluster.stabilize()
    kinds = [e.kind for e in cluster.peers["n1"].applied[-2:]]
    assert kinds == [EntryKind.CONF_CHANGE, EntryKind.EMPTY]
    assert leader.status().voters == ("n1", "n2")
    leader.propose_conf_change(ConfChange(ConfChangeKind.REMOVE_VOTER, "n2"))
    cluster.stabilize()
    assert leader.status().voters == ("n1",)
    leader.propose(b"alone")
    cluster.stabilize()
    assert cluster.applied_data("n1")[-1] == b"alone"


def test_removed_node_does_not_campaign() -> None:
    cluster = committed_cluster()
    cluster.node("n1").propose_conf_change(ConfChange(ConfChangeKind.REMOVE_VOTER, "n3"))
    cluster.stabilize()
    cluster.isolate("n3")
    cluster.tick("n3", 5 * cluster.config.election_timeout_ticks)
    assert cluster.node("n3").status().role is Role.FOLLOWER


def test_transfer_to_an_unreachable_node_is_abandoned_after_an_election_timeout() -> None:
    cluster = committed_cluster()
    cluster.isolate("n3")
    cluster.node("n1").propose(b"n3 misses this")
    cluster.stabilize()
    cluster.node("n1").transfer_leader("n3")
    with pytest.raises(NotLeaderError):
        cluster.node("n1").propose(b"refused")
    for _ in range(cluster.config.election_timeout_ticks):
        cluster.tick("n1")
        cluster.tick("n2")
        cluster.stabilize()
    assert cluster.node("n1").status().role is Role.LEADER
    cluster.node("n1").propose(b"accepted again")
    cluster.stabilize()
    assert cluster.applied_data("n2")[-1] == b"accepted again"


def test_transfer_request_at_a_follower_is_forwarded() -> None:
    cluster = committed_cluster()
    cluster.node("n2").transfer_leader("n3")
    cluster.stabilize()
    assert cluster.leaders() == ["n3"]


def test_unresponsive_follower_never_has_more_appends_in_flight_than_allowed() -> None:
    config = RaftConfig(election_timeout_ticks=10, heartbeat_ticks=1, max_inflight_appends=3)
    cluster = committed_cluster(config=config)
    cluster.isolate("n3")
    sent_to_n3 = 0
    for i in range(20):
        cluster.node("n1").propose(b"%d" % i)
        ready = cluster.process_ready("n1")
        assert ready is not None
        sent_to_n3 += sum(m.type is MessageType.APP and m.to == "n3" for m in ready.messages)
        cluster.stabilize()
    assert sent_to_n3 <= 3


def test_proposals_batch_into_one_append_per_follower() -> None:
    cluster = committed_cluster()
    cluster.node("n1").propose_many([b"%d" % i for i in range(100)])
    ready = cluster.process_ready("n1")
    assert ready is not None
    appends = [m for m in ready.messages if m.type is MessageType.APP]
    assert sorted(str(m.to) for m in appends) == ["n2", "n3"]
    assert all(len(m.entries) == 100 for m in appends)


def test_proposals_stepped_one_by_one_share_one_append_per_follower() -> None:
    cluster = committed_cluster()
    for i in range(20):
        cluster.node("n1").propose(b"%d" % i)
    ready = cluster.process_ready("n1")
    assert ready is not None
    appends = [m for m in ready.messages if m.type is MessageType.APP]
    assert sorted(str(m.to) for m in appends) == ["n2", "n3"]
    assert all([e.data for e in m.entries] == [b"%d" % i for i in range(20)] for m in appends)


def test_a_commit_advance_rides_on_the_next_append_with_new_entries() -> None:
    cluster = committed_cluster()
    cluster.node("n1").propose(b"a")
    cluster.process_ready("n1")
    for follower in ("n2", "n3"):
        cluster.deliver(follower)
        cluster.process_ready(follower)
    cluster.deliver("n1")  # both acknowledgements: "a" commits
    cluster.node("n1").propose(b"b")
    ready = cluster.process_ready("n1")
    assert ready is not None
    appends = [m for m in ready.messages if m.type is MessageType.APP]
    last = cluster.node("n1").status().last_index
    assert sorted(str(m.to) for m in appends) == ["n2", "n3"]
    assert all(m.commit == last - 1 and [e.data for e in m.entries] == [b"b"] for m in appends)


def test_a_commit_advance_alone_sends_one_empty_append_per_follower() -> None:
    cluster = committed_cluster()
    cluster.node("n1").propose(b"a")
    cluster.process_ready("n1")
    for follower in ("n2", "n3"):
        cluster.deliver(follower)
        cluster.process_ready(follower)
    cluster.deliver("n1")
    ready = cluster.process_ready("n1")
    assert ready is not None
    appends = [m for m in ready.messages if m.type is MessageType.APP]
    last = cluster.node("n1").status().last_index
    assert sorted(str(m.to) for m in appends) == ["n2", "n3"]
    assert all(m.commit == last and not m.entries for m in appends)


def test_only_a_leader_with_durable_term_and_vote_may_send_while_persisting() -> None:
    cluster = Cluster(IDS)
    cluster.node("n1").campaign()
    pre_vote = cluster.process_ready("n1")
    assert pre_vote is not None
    assert not pre_vote.send_while_persisting
    for node_id in ("n2", "n3"):
        cluster.deliver(node_id)
        answer = cluster.process_ready(node_id)
        assert answer is not None
        assert not answer.send_while_persisting
    cluster.deliver("n1")
    vote = cluster.process_ready("n1")  # a new term and our own vote: durable first
    assert vote is not None
    assert vote.hard_state is not None
    assert not vote.send_while_persisting
    cluster.stabilize()
    cluster.node("n1").propose(b"a")
    append = cluster.process_ready("n1")
    assert append is not None
    assert append.entries
    assert append.send_while_persisting
    cluster.deliver("n2")
    acknowledgement = cluster.process_ready("n2")  # a follower acknowledges stored entries
    assert acknowledgement is not None
    assert acknowledgement.entries
    assert not acknowledgement.send_while_persisting


def test_ready_must_be_advanced_before_the_next() -> None:
    node, _ = make_node("n1", IDS)
    node.campaign()
    ready = node.ready()
    with pytest.raises(RuntimeError):
        node.ready()
    node.advance(ready)
    with pytest.raises(RuntimeError):
        node.advance(ready)


def test_local_message_types_are_refused_from_the_network() -> None:
    node, _ = make_node("n1", IDS)
    with pytest.raises(ValueError, match="local"):
        node.step(Message(MessageType.HUP, "n2", "n1", 1))


def test_answers_from_non_voters_are_ignored() -> None:
    node, storage = make_node("n1", IDS)
    node.campaign()
    flush(node, storage)
    node.step(Message(MessageType.PRE_VOTE_RESP, "intruder", "n1", 1))
    node.step(Message(MessageType.PRE_VOTE_RESP, "intruder2", "n1", 1))
    assert node.status().role is Role.PRE_CANDIDATE


def test_reads_beyond_the_queue_limit_are_dropped_and_counted() -> None:
    config = RaftConfig(election_timeout_ticks=10, heartbeat_ticks=1, max_pending_reads=4)
    cluster = committed_cluster(config=config)
    cluster.isolate("n1")
    for i in range(10):
        cluster.node("n1").read_index(b"%d" % i)
    assert cluster.node("n1").raft.dropped_reads == 6


@pytest.mark.parametrize("seed", range(6))
def test_cluster_recovers_after_random_faults(seed: int) -> None:
    """After any mix of partitions and losses heals, a leader emerges, a new write commits
    everywhere, and every node has applied the same sequence."""
    rng = random.Random(seed)
    ids = ("n1", "n2", "n3", "n4", "n5")
    cluster = Cluster(ids, RaftConfig(election_timeout_ticks=5, heartbeat_ticks=1), seed)
    for step in range(300):
        if rng.random() < 0.05:
            cluster.heal()
            shuffled = rng.sample(ids, len(ids))
            cluster.partition(shuffled[:2], shuffled[2:])
        node_id = rng.choice(ids)
        cluster.tick(node_id)
        if rng.random() < 0.3:
            with contextlib.suppress(NotLeaderError):
                cluster.node(node_id).propose(b"s%d" % step)
        cluster.process_ready(node_id)
        for target in ids:
            queue = cluster.queues[target]
            cluster.queues[target] = [m for m in queue if rng.random() < 0.8]
            cluster.deliver(target)
    cluster.heal()
    leader = cluster.tick_until_leader(ids)
    cluster.node(leader).propose(b"final")
    cluster.tick_all(5)
    sequences = {node_id: cluster.applied_data(node_id) for node_id in ids}
    assert all(seq == sequences[leader] for seq in sequences.values()), f"seed={seed}"
    assert sequences[leader][-1] == b"final", f"seed={seed}"


def _arbitrary_message(rng: random.Random, ids: list[str]) -> Message:
    kinds = [t for t in MessageType if t not in LOCAL_MESSAGE_TYPES]
    index = rng.randrange(8)
    entries = tuple(
        Entry(
            rng.randrange(6),
            rng.choice([index + 1 + i, rng.randrange(10)]),
            rng.choice(list(EntryKind)),
            rng.choice([b"", b"junk"]),
        )
        for i in range(rng.randrange(4))
    )
    voters = tuple(rng.sample(ids, rng.randrange(len(ids) + 1)))
    snapshot = Snapshot(SnapshotMeta(rng.randrange(10), rng.randrange(6), voters), b"")
    return Message(
        rng.choice(kinds),
        rng.choice([*ids, "stranger"]),
        "n1",
        rng.randrange(6),
        rng.randrange(6),
        index,
        entries,
        rng.randrange(10),
        rng.random() < 0.5,
        rng.randrange(10),
        rng.choice([b"", b"\0" * 8, b"n2", b"transfer"]),
        rng.choice([None, snapshot]),
    )


@pytest.mark.parametrize("seed", range(4))
def test_arbitrary_decodable_messages_are_refused_cleanly(seed: int) -> None:
    """Whatever a peer sends, stepping it either works or raises ValueError/DecodeError, and
    the node's positions stay consistent (commit within the log, applied within commit)."""
    rng = random.Random(seed)
    ids = ["n1", "n2", "n3"]
    for trial in range(100):
        cluster = Cluster(ids, seed=trial)
        cluster.elect(rng.choice(ids))
        cluster.node("n2").propose(b"x")
        cluster.stabilize()
        node = cluster.node("n1")
        for _ in range(8):
            with contextlib.suppress(ValueError, DecodeError):
                node.step(_arbitrary_message(rng, ids))
            cluster.process_ready("n1")
            status = node.status()
            assert status.applied <= status.commit <= status.last_index, f"seed={seed}"


def test_restart_with_a_commit_beyond_the_log_is_a_storage_error() -> None:
    storage = MemoryStorage(IDS)
    storage.append([Entry(1, 1)])
    storage.set_hard_state(HardState(1, "n1", 5))
    with pytest.raises(StorageError, match="beyond the last stored entry"):
        RawNode("n2", storage, RaftConfig(), random.Random(0))


def test_restart_after_a_snapshot_whose_hard_state_was_lost() -> None:
    storage = MemoryStorage(IDS)
    storage.apply_snapshot(Snapshot(SnapshotMeta(7, 2, IDS), b"image"))
    storage.set_hard_state(HardState(2, "n1", 3))  # older than the snapshot
    node = RawNode("n2", storage, RaftConfig(), random.Random(0), applied=7)
    assert (node.status().commit, node.status().applied) == (7, 7)


def test_uncommitted_proposals_are_bounded() -> None:
    config = RaftConfig(election_timeout_ticks=10, heartbeat_ticks=1, max_uncommitted_bytes=4096)
    cluster = committed_cluster(config=config)
    cluster.partition(["n1"], ["n2", "n3"])
    accepted = 4  # 4 x 1016 bytes fit in 4096
    for _ in range(accepted):
        cluster.node("n1").propose(b"x" * 1000)
    with pytest.raises(UnavailableError, match="await commit"):
        cluster.node("n1").propose(b"x" * 1000)
    cluster.heal()
    cluster.tick("n1")
    cluster.stabilize()
    assert len(cluster.applied_data("n2")) == accepted
    cluster.node("n1").propose(b"room again")
    cluster.stabilize()
    assert cluster.applied_data("n3")[-1] == b"room again"
