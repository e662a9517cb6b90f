"""One test per rule of the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable
Consensus Algorithm", extended version) and of the thesis sections on PreVote and CheckQuorum,
in the manner of etcd-io/raft ``raft_paper_test.go``. Each docstring ends with its reference:
§5.x, §6 and §8 are sections of the paper; §6.2 (a leader steps down without a quorum) and §9.6
(PreVote) are sections of Ongaro's thesis, "Consensus: Bridging Theory and Practice".
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import replace

import pytest
from harness import Cluster, Peer, flush, make_node, outbox

from crdtstream.config import RaftConfig
from crdtstream.errors import NotLeaderError
from crdtstream.raft.rawnode import RawNode
from crdtstream.raft.storage import MemoryStorage
from crdtstream.raft.types import Entry, EntryKind, HardState, Message, MessageType, Ready, Role

CLASSIC = RaftConfig(
    election_timeout_ticks=10, heartbeat_ticks=1, pre_vote=False, check_quorum=False
)
ELECTION_TICKS = CLASSIC.election_timeout_ticks
IDS = ("n1", "n2", "n3")


def app(
    sender: str, to: str, term: int, *, index: int = 0, log_term: int = 0, **kw: object
) -> Message:
    return Message(MessageType.APP, sender, to, term, log_term, index, **kw)  # type: ignore[arg-type]


def leader_of(
    ids: tuple[str, ...] = IDS, config: RaftConfig = CLASSIC
) -> tuple[RawNode, MemoryStorage]:
    """``ids[0]`` elected leader of term 1 by hand, its empty entry at index 1 persisted."""
    node, storage = make_node(ids[0], ids, config=config)
    node.campaign()
    flush(node, storage)
    for voter in ids[1:]:
        node.step(Message(MessageType.VOTE_RESP, voter, ids[0], 1))
    assert node.status().role is Role.LEADER
    flush(node, storage)
    return node, storage


def acknowledge(node: RawNode, voter: str, index: int) -> None:
    node.step(Message(MessageType.APP_RESP, voter, node.id, node.status().term, index=index))


# -- §5.1: terms ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE, Role.LEADER])
def test_node_adopts_a_higher_term_and_becomes_follower(role: Role) -> None:
    """A server seeing a larger term updates its own and reverts to follower.

    Reference: §5.1
    """
    node, _ = make_node("n1", IDS, config=CLASSIC)
    if role is Role.CANDIDATE:
        node.campaign()
    elif role is Role.LEADER:
        node, _ = leader_of()
    assert node.status().role is role
    node.step(app("n2", "n1", 5))
    status = node.status()
    assert (status.role, status.term, status.leader) == (Role.FOLLOWER, 5, "n2")


def test_stale_term_message_is_refused() -> None:
    """A request with a stale term is rejected; the answer tells the sender the newer term.

    Reference: §5.1
    """
    node, storage = make_node("n1", IDS, log_terms=[1, 2], term=2, config=CLASSIC)
    node.step(app("n2", "n1", 1, index=2, log_term=1, entries=(Entry(1, 3),), commit=3))
    status = node.status()
    assert (status.term, status.last_index, status.commit) == (2, 2, 0)
    assert outbox(node, storage) == []  # classic Raft drops it; no state change either


def test_stale_leader_is_told_the_newer_term() -> None:
    """With CheckQuorum or PreVote, a stale append is answered so its sender learns our term.

    Reference: §5.1
    """
    node, storage = make_node("n1", IDS, log_terms=[1], term=3)
    node.step(Message(MessageType.HEARTBEAT, "n2", "n1", 2))
    [answer] = outbox(node, storage)
    assert (answer.type, answer.to, answer.term) == (MessageType.APP_RESP, "n2", 3)


# -- §5.2: leader election -------------------------------------------------------------------------


def test_node_starts_as_follower() -> None:
    """When servers start up, they begin as followers.

    Reference: §5.2
    """
    node, _ = make_node("n1", IDS)
    assert node.status().role is Role.FOLLOWER
    assert node.status().term == 0


def test_leader_sends_heartbeats_every_heartbeat_interval() -> None:
    """Leaders send periodic heartbeats to all followers to maintain their authority.

    Reference: §5.2
    """
    node, storage = leader_of()
    outbox(node, storage)
    node.tick()
    heartbeats = outbox(node, storage)
    assert sorted((m.type, m.to, m.term) for m in heartbeats) == [
        (MessageType.HEARTBEAT, "n2", 1),
        (MessageType.HEARTBEAT, "n3", 1),
    ]


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE])
def test_election_starts_after_the_election_timeout(role: Role) -> None:
    """A follower (or candidate) that hears nothing for an election timeout starts an
    election: it increments its term, votes for itself and asks every other server for a vote.

    Reference: §5.2
    """
    node, storage = make_node("n1", IDS, config=CLASSIC)
    if role is Role.CANDIDATE:
        node.campaign()
        flush(node, storage)
    term_before = node.status().term
    for _ in range(2 * ELECTION_TICKS):
        node.tick()
    status = node.status()
    assert (status.role, status.term, status.vote) == (Role.CANDIDATE, term_before + 1, "n1")
    votes = outbox(node, storage)
    assert sorted((m.type, m.to, m.term) for m in votes) == [
        (MessageType.VOTE, "n2", term_before + 1),
        (MessageType.VOTE, "n3", term_before + 1),
    ]


@pytest.mark.parametrize(
    ("cluster_size", "grants", "expected"),
    [
        (1, {}, Role.LEADER),
        (3, {"n2": True}, Role.LEADER),
        (3, {"n2": True, "n3": True}, Role.LEADER),
        (5, {"n2": True, "n3": True}, Role.LEADER),
        (3, {}, Role.CANDIDATE),
        (5, {"n2": True}, Role.CANDIDATE),
        (5, {"n2": False, "n3": False}, Role.CANDIDATE),
        (3, {"n2": False, "n3": False}, Role.FOLLOWER),
        (5, {"n2": False, "n3": False, "n4": False}, Role.FOLLOWER),
    ],
)
def test_election_is_decided_by_a_majority_of_votes(
    cluster_size: int, grants: dict[str, bool], expected: Role
) -> None:
    """A candidate wins with votes from a majority, loses with rejections from a majority, and
    otherwise keeps waiting.

    Reference: §5.2
    """
    ids = tuple(f"n{i}" for i in range(1, cluster_size + 1))
    node, storage = make_node("n1", ids, config=CLASSIC)
    node.campaign()
    flush(node, storage)
    for voter, granted in grants.items():
        node.step(Message(MessageType.VOTE_RESP, voter, "n1", 1, reject=not granted))
    assert node.status().role is expected


@pytest.mark.parametrize(
    ("vote", "candidate", "rejected"),
    [(None, "n2", False), (None, "n3", False), ("n2", "n2", False), ("n2", "n3", True)],
)
def test_follower_votes_for_at_most_one_candidate_per_term(
    vote: str | None, candidate: str, rejected: bool
) -> None:
    """Each server votes for at most one candidate in a given term, first come first served.

    Reference: §5.2
    """
    node, storage = make_node("n1", IDS, config=CLASSIC)
    node.step(app("n9", "n1", 1))  # learn term 1 (from a leader that is gone)
    flush(node, storage)
    node.raft.leader = None
    node.raft.vote = vote
    node.step(Message(MessageType.VOTE, candidate, "n1", 1))
    [answer] = outbox(node, storage)
    assert (answer.type, answer.to, answer.reject) == (MessageType.VOTE_RESP, candidate, rejected)


def test_candidate_falls_back_to_follower_on_append_from_leader_of_its_term() -> None:
    """A candidate receiving an append from a leader whose term is at least its own returns
    to follower state.

    Reference: §5.2
    """
    node, storage = make_node("n1", IDS, config=CLASSIC)
    node.campaign()
    flush(node, storage)
    node.step(app("n2", "n1", 1))
    status = node.status()
    assert (status.role, status.term, status.leader) == (Role.FOLLOWER, 1, "n2")


def test_election_timeouts_are_randomized() -> None:
    """Election timeouts are chosen randomly from a fixed interval (here [T, 2T)), so that
    split votes are rare.

    Reference: §5.2
    """
    seen = set()
    for seed in range(200):
        node, _ = make_node("n1", IDS, config=CLASSIC, seed=seed)
        ticks = 0
        while node.status().role is Role.FOLLOWER:
            node.tick()
            ticks += 1
        seen.add(ticks)
    assert seen == set(range(ELECTION_TICKS, 2 * ELECTION_TICKS))


def test_randomized_timeouts_rarely_collide() -> None:
    """With randomized timeouts, in most cases only one server times out first.

    Reference: §5.2
    """
    alone = 0
    for seed in range(100):
        cluster = Cluster(IDS, CLASSIC, seed=seed)
        for _ in range(2 * ELECTION_TICKS):
            for node_id in IDS:
                cluster.tick(node_id)
            candidates = [n for n in IDS if cluster.node(n).status().role is Role.CANDIDATE]
            if candidates:
                alone += len(candidates) == 1
                break
    assert alone >= 60, f"only {alone}/100 elections started with a single candidate"


# -- §5.3: log replication -------------------------------------------------------------------------


def test_leader_replicates_a_proposal_to_every_follower() -> None:
    """The leader appends the command to its log, then sends it to every follower together
    with the index and term of the entry preceding it.

    Reference: §5.3
    """
    node, storage = leader_of()
    acknowledge(node, "n2", 1)
    acknowledge(node, "n3", 1)
    outbox(node, storage)
    node.propose(b"x")
    ready = flush(node, storage)
    assert [(e.index, e.term, e.data) for e in ready.entries] == [(2, 1, b"x")]
    appends = sorted(
        (m.to, m.index, m.log_term, [e.data for e in m.entries]) for m in ready.messages
    )
    assert appends == [("n2", 1, 1, [b"x"]), ("n3", 1, 1, [b"x"])]


def test_leader_commits_once_a_majority_holds_the_entry() -> None:
    """An entry is committed once the leader has replicated it on a majority; the commit index
    then travels in later appends.

    Reference: §5.3
    """
    node, storage = leader_of(("n1", "n2", "n3", "n4", "n5"))
    for voter in ("n2", "n3", "n4", "n5"):
        acknowledge(node, voter, 1)
    node.propose(b"x")
    flush(node, storage)
    acknowledge(node, "n2", 2)
    assert node.status().commit == 1
    acknowledge(node, "n3", 2)
    assert node.status().commit == 2
    ready = flush(node, storage)
    assert [e.data for e in ready.committed_entries] == [b"x"]
    assert {m.commit for m in ready.messages if m.type is MessageType.APP} == {2}


def test_leader_commit_covers_preceding_entries() -> None:
    """Committing an entry also commits all preceding entries, including those of earlier terms
    held by the new leader.

    Reference: §5.3
    """
    node, storage = make_node("n1", IDS, log_terms=[1, 1, 2], term=2, config=CLASSIC)
    node.campaign()
    node.step(Message(MessageType.VOTE_RESP, "n2", "n1", 3))
    flush(node, storage)
    acknowledge(node, "n2", 4)  # everything, including the empty entry of term 3
    assert node.status().commit == 4
    assert [e.index for e in flush(node, storage).committed_entries] == [1, 2, 3, 4]


def test_follower_applies_what_the_leader_reports_committed() -> None:
    """Once a follower learns an entry is committed, it applies it in log order.

    Reference: §5.3
    """
    node, storage = make_node("n2", IDS, config=CLASSIC)
    entries = (Entry(1, 1, EntryKind.NORMAL, b"a"), Entry(1, 2, EntryKind.NORMAL, b"b"))
    node.step(app("n1", "n2", 1, entries=entries, commit=1))
    ready = flush(node, storage)
    assert [e.data for e in ready.committed_entries] == [b"a"]
    node.step(Message(MessageType.HEARTBEAT, "n1", "n2", 1, commit=2))
    assert [e.data for e in flush(node, storage).committed_entries] == [b"b"]


@pytest.mark.parametrize(
    ("log_term", "index", "accepted", "hint"),
    [
        (0, 0, True, 0),  # the empty prefix always matches
        (1, 1, True, 0),
        (2, 2, True, 0),
        (1, 2, False, 1),  # term mismatch at 2: hint at 1, the last entry with term <= 1
        (3, 3, False, 2),  # beyond our log: hint at our last index
    ],
)
def test_follower_refuses_append_whose_previous_entry_does_not_match(
    log_term: int, index: int, accepted: bool, hint: int
) -> None:
    """If the follower does not find an entry with the same index and term as the one preceding
    the new entries, it refuses them (with a hint for fast backtracking).

    Reference: §5.3
    """
    node, storage = make_node("n2", IDS, log_terms=[1, 2], term=2, config=CLASSIC)
    node.step(app("n1", "n2", 2, index=index, log_term=log_term))
    [answer] = outbox(node, storage)
    assert answer.type is MessageType.APP_RESP
    assert answer.reject is not accepted
    if not accepted:
        assert answer.reject_hint == hint


@pytest.mark.parametrize(
    ("index", "log_term", "entries", "expected_terms"),
    [
        (2, 2, [(3, 3)], [1, 2, 3]),
        (1, 1, [(2, 3), (3, 4)], [1, 3, 4]),  # conflict at 2: truncate and replace
        (0, 0, [(1, 1)], [1, 2]),  # already held: nothing is truncated
        (0, 0, [(1, 1), (2, 2)], [1, 2]),
        (0, 0, [(1, 3)], [3]),
    ],
)
def test_follower_deletes_conflicting_entries_only(
    index: int, log_term: int, entries: list[tuple[int, int]], expected_terms: list[int]
) -> None:
    """A conflicting entry and all that follow it are deleted; entries already held are kept,
    so a stale or duplicated append never truncates the log.

    Reference: §5.3
    """
    node, storage = make_node("n2", IDS, log_terms=[1, 2], term=2, config=CLASSIC)
    batch = tuple(Entry(term, i) for i, term in entries)
    node.step(app("n1", "n2", 4, index=index, log_term=log_term, entries=batch))
    flush(node, storage)
    assert [storage.term(i) for i in range(1, storage.last_index() + 1)] == expected_terms


FIGURE_7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}
FIGURE_7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]


@pytest.mark.parametrize("case", sorted(FIGURE_7_FOLLOWERS))
def test_leader_brings_every_follower_log_into_line(case: str) -> None:
    """The leader forces followers' logs to duplicate its own (Figure 7): it finds the latest
    entry where they agree, the follower deletes what follows, and receives the leader's.

    Reference: §5.3
    """
    cluster = Cluster(IDS, CLASSIC)
    for node_id, terms in (("n1", FIGURE_7_LEADER), ("n2", FIGURE_7_FOLLOWERS[case])):
        storage = MemoryStorage(IDS)
        storage.append([Entry(t, i) for i, t in enumerate(terms, 1)])
        cluster.peers.pop(node_id)
        cluster.add_peer(node_id, storage)
    cluster.node("n1").raft.term = 7  # the leader of Figure 7 is elected in term 8
    cluster.node("n2").raft.term = 7
    cluster.partition(["n1", "n3"], ["n2"])  # n3 (empty log) gives the leader its majority
    cluster.elect("n1")
    cluster.heal()
    cluster.tick("n1")  # a heartbeat finds n2 again
    cluster.stabilize()
    cluster.node("n1").propose(b"sync")
    cluster.stabilize()
    leader_log = cluster.node("n1").raft.log
    follower_log = cluster.node("n2").raft.log
    assert leader_log.last_index() == follower_log.last_index()
    for i in range(1, leader_log.last_index() + 1):
        assert leader_log.term(i) == follower_log.term(i), f"index {i}"


# -- §5.4: safety ----------------------------------------------------------------------------------


def test_vote_request_carries_the_candidate_last_entry() -> None:
    """RequestVote includes the index and term of the candidate's last log entry.

    Reference: §5.4.1
    """
    node, storage = make_node("n1", IDS, log_terms=[1, 1, 2], term=2, config=CLASSIC)
    node.campaign()
    for message in outbox(node, storage):
        assert (message.type, message.term, message.index, message.log_term) == (
            MessageType.VOTE,
            3,
            3,
            2,
        )


@pytest.mark.parametrize(
    ("voter_log", "candidate_index", "candidate_term", "granted"),
    [
        ([1, 1], 2, 1, True),  # same last term, same length
        ([1, 1], 3, 1, True),  # same last term, longer
        ([1, 1], 1, 1, False),  # same last term, shorter
        ([1, 1], 1, 2, True),  # higher last term wins even if shorter
        ([1, 2], 3, 1, False),  # lower last term loses even if longer
        ([1, 2], 2, 2, True),
    ],
)
def test_voter_denies_candidates_with_less_up_to_date_logs(
    voter_log: list[int], candidate_index: int, candidate_term: int, granted: bool
) -> None:
    """A voter denies its vote if its own log is more up to date: compare last terms, then
    lengths.

    Reference: §5.4.1
    """
    node, storage = make_node("n1", IDS, log_terms=voter_log, term=2, config=CLASSIC)
    node.step(Message(MessageType.VOTE, "n2", "n1", 3, candidate_term, candidate_index))
    [answer] = outbox(node, storage)
    assert answer.reject is not granted


def test_leader_never_commits_an_old_term_entry_by_counting_replicas() -> None:
    """Only entries from the leader's current term are committed by counting replicas; older
    ones are committed indirectly (Figure 8).

    Reference: §5.4.2
    """
    node, storage = make_node("n1", IDS, log_terms=[1, 2], term=2, config=CLASSIC)
    node.campaign()
    node.step(Message(MessageType.VOTE_RESP, "n2", "n1", 3))
    flush(node, storage)
    acknowledge(node, "n2", 2)  # a majority holds index 2, of term 2
    assert node.status().commit == 0
    acknowledge(node, "n2", 3)  # the empty entry of term 3 reaches a majority
    assert node.status().commit == 3


def _figure_8_storage(terms: list[int], term: int, ids: tuple[str, ...]) -> MemoryStorage:
    storage = MemoryStorage(ids)
    storage.append([Entry(t, i, EntryKind.NORMAL, b"t%d" % t) for i, t in enumerate(terms, 1)])
    storage.set_hard_state(HardState(term, None, 0))
    return storage


def test_figure_8_an_old_entry_on_a_majority_can_still_be_overwritten() -> None:
    """Figure 8: S1, leader of term 4, gets its term-2 entry at index 2 onto a majority (S1-S3)
    but must not commit it, because S5 (last entry of term 3) can still win term 5 with votes of
    S2, S3 and S4 and overwrite index 2 everywhere.

    Reference: §5.4.2
    """
    ids = ("s1", "s2", "s3", "s4", "s5")
    logs = {"s1": [1, 2], "s2": [1, 2], "s3": [1], "s4": [1], "s5": [1, 3]}
    cluster = Cluster((), CLASSIC)
    cluster.initial_voters = ids
    for node_id in ids:
        cluster.add_peer(node_id, _figure_8_storage(logs[node_id], 3, ids))
    cluster.partition(["s1", "s2", "s3"], ["s4", "s5"])
    cluster.node("s1").campaign()
    cluster.process_ready("s1")
    for voter in ("s2", "s3"):
        cluster.deliver(voter)
        cluster.process_ready(voter)
    cluster.deliver("s1")
    assert cluster.node("s1").status().role is Role.LEADER
    assert cluster.node("s1").status().term == 4
    cluster.process_ready("s1")
    cluster.queues["s2"].clear()  # s2 keeps [1, 2]; s3 must first be probed back to index 1
    cluster.deliver("s3")
    cluster.process_ready("s3")
    cluster.deliver("s1")
    cluster.process_ready("s1")
    [append] = cluster.queues["s3"]
    assert [(e.index, e.term) for e in append.entries] == [(2, 2), (3, 4)]
    # Only the term-2 entry arrives (the rest is lost): index 2 now sits on s1, s2 and s3.
    cluster.queues["s3"] = [replace(append, entries=append.entries[:1])]
    cluster.deliver("s3")
    cluster.process_ready("s3")
    cluster.deliver("s1")
    assert cluster.node("s1").status().match_by_voter["s3"] == 2
    assert cluster.node("s1").status().commit == 0, "a term-2 entry was committed by counting"
    cluster.heal()
    cluster.isolate("s1")  # s1 crashes
    cluster.node("s5").campaign()  # term 4: s2 and s3 already voted for s1 in it
    cluster.stabilize()
    cluster.elect("s5")  # term 5
    assert cluster.node("s5").status().term == 5
    cluster.heal()
    cluster.tick("s5")
    cluster.stabilize()
    for node_id in ids:
        log = cluster.node(node_id).raft.log
        assert log.term(2) == 3, f"{node_id} keeps the overwritten entry"
        assert b"t2" not in cluster.applied_data(node_id)
    assert cluster.applied_data("s1")[:2] == [b"t1", b"t3"]


# -- Figure 2: persistence before replying ---------------------------------------------------------


def test_votes_and_terms_are_durable_before_any_message_leaves() -> None:
    """Servers update currentTerm, votedFor and log[] on stable storage before responding to
    RPCs: a Ready's messages come with the hard state and entries they depend on, so a driver
    that persists each Ready before sending it never sends a promise it could forget.

    Reference: §5.1
    """
    node, _ = make_node("n2", IDS, config=CLASSIC)
    node.step(Message(MessageType.VOTE, "n1", "n2", 1))
    ready = node.ready()
    [answer] = ready.messages
    assert answer.type is MessageType.VOTE_RESP
    assert not answer.reject
    assert ready.hard_state is not None
    assert (ready.hard_state.term, ready.hard_state.vote) == (1, "n1")
    node.advance(ready)
    node.step(app("n1", "n2", 1, entries=(Entry(1, 1, EntryKind.NORMAL, b"x"),)))
    ready = node.ready()
    [answer] = ready.messages
    assert (answer.type, answer.index, answer.reject) == (MessageType.APP_RESP, 1, False)
    assert [e.index for e in ready.entries] == [1]


# -- §8: client interaction and read-only queries --------------------------------------------------


def _committed_leader(cluster: Cluster, node_id: str) -> None:
    cluster.elect(node_id)
    cluster.node(node_id).propose(b"w")
    cluster.stabilize()


def test_read_waits_for_a_heartbeat_round_with_a_majority() -> None:
    """A leader answers a read-only query only after exchanging heartbeats with a majority,
    at the commit index recorded when the query arrived.

    Reference: §8
    """
    node, storage = leader_of()
    acknowledge(node, "n2", 1)  # commits the term's empty entry
    flush(node, storage)
    node.read_index(b"r")
    beats = [m for m in outbox(node, storage) if m.type is MessageType.HEARTBEAT]
    assert len(beats) == 2
    assert flush(node, storage).read_states == ()
    node.step(Message(MessageType.HEARTBEAT_RESP, "n2", "n1", 1, context=beats[0].context))
    [read] = flush(node, storage).read_states
    assert (read.index, read.request_ctx) == (1, b"r")


def test_reads_arriving_together_share_one_heartbeat_round() -> None:
    """Many read-only queries are confirmed by the same heartbeat exchange.

    Reference: §8
    """
    cluster = Cluster(IDS)
    _committed_leader(cluster, "n1")
    node = cluster.node("n1")
    for i in range(50):
        node.read_index(b"r%d" % i)
    ready = cluster.process_ready("n1")
    assert ready is not None
    assert sum(m.type is MessageType.HEARTBEAT for m in ready.messages) == 2
    cluster.stabilize()
    reads = cluster.peers["n1"].read_states
    assert [r.request_ctx for r in reads] == [b"r%d" % i for i in range(50)]


def test_new_leader_serves_reads_only_after_committing_an_entry_of_its_term() -> None:
    """A new leader does not know what is committed until an entry of its own term commits;
    reads wait for that.

    Reference: §8
    """
    node, storage = leader_of()
    node.read_index(b"r")
    assert not any(m.type is MessageType.HEARTBEAT for m in outbox(node, storage))
    acknowledge(node, "n2", 1)
    beats = [m for m in outbox(node, storage) if m.type is MessageType.HEARTBEAT]
    assert beats, "the parked read starts its heartbeat round once the term's entry commits"
    node.step(Message(MessageType.HEARTBEAT_RESP, "n3", "n1", 1, context=beats[0].context))
    assert [r.index for r in flush(node, storage).read_states] == [1]


def test_read_at_follower_is_confirmed_by_the_leader() -> None:
    """A read sent to a follower is forwarded to the leader, which confirms it and returns the
    read index to the follower.

    Reference: §8
    """
    cluster = Cluster(IDS)
    _committed_leader(cluster, "n1")
    cluster.node("n3").read_index(b"f")
    cluster.stabilize()
    [read] = cluster.peers["n3"].read_states
    assert (read.index, read.request_ctx) == (cluster.node("n1").status().commit, b"f")


@pytest.mark.parametrize("check_quorum", [True, False])
def test_deposed_leader_never_serves_a_stale_read(check_quorum: bool) -> None:
    """A leader cut off from the majority may not know it was deposed; it must not answer a
    read, since the new leader may already have committed newer writes.

    Reference: §8
    """
    config = RaftConfig(election_timeout_ticks=10, heartbeat_ticks=1, check_quorum=check_quorum)
    cluster = Cluster(IDS, config)
    _committed_leader(cluster, "n1")
    cluster.isolate("n1")
    new_leader = cluster.tick_until_leader(["n2", "n3"])
    cluster.node(new_leader).propose(b"newer")
    cluster.stabilize()
    cluster.node("n1").read_index(b"stale?")
    for _ in range(3 * config.election_timeout_ticks):
        cluster.tick("n1")
        cluster.stabilize()
    assert cluster.peers["n1"].read_states == []
    cluster.heal()
    cluster.tick_all(3)
    assert cluster.peers["n1"].read_states == []  # the old round died with the old term
    cluster.node("n1").read_index(b"fresh")
    cluster.stabilize()
    [read] = cluster.peers["n1"].read_states
    assert read.index >= cluster.node(new_leader).status().commit


# -- PreVote and CheckQuorum (thesis §9.6 and §6.2) -----------------------------------------------


@pytest.mark.parametrize(("pre_vote", "disrupts"), [(True, False), (False, True)])
def test_pre_vote_keeps_a_rejoining_node_from_disrupting_the_leader(
    pre_vote: bool, disrupts: bool
) -> None:
    """With PreVote, a node that was partitioned and kept timing out does not raise its term,
    so on rejoining it cannot force a working leader to step down.

    Reference: §9.6
    """
    config = RaftConfig(
        election_timeout_ticks=10, heartbeat_ticks=1, pre_vote=pre_vote, check_quorum=False
    )
    cluster = Cluster(IDS, config)
    cluster.elect("n1")
    cluster.isolate("n3")
    cluster.node("n1").propose(b"written while n3 is away")
    cluster.stabilize()
    for _ in range(5 * config.election_timeout_ticks):
        cluster.tick("n3")
        cluster.stabilize()
    term_at_n3 = cluster.node("n3").status().term
    assert (term_at_n3 > 1) is disrupts
    cluster.heal()
    cluster.node("n3").campaign()
    cluster.stabilize()
    assert (cluster.node("n1").status().role is not Role.LEADER) is disrupts


def test_leader_without_a_quorum_steps_down() -> None:
    """With CheckQuorum, a leader that has not heard from a majority for an election timeout
    steps down, so clients stop waiting on it.

    Reference: §6.2
    """
    cluster = Cluster(IDS)
    cluster.elect("n1")
    cluster.isolate("n1")
    for _ in range(2 * cluster.config.election_timeout_ticks):
        cluster.tick("n1")
    assert cluster.node("n1").status().role is Role.FOLLOWER
    with pytest.raises(NotLeaderError):
        cluster.node("n1").propose(b"x")


def test_follower_in_leader_lease_ignores_votes() -> None:
    """A server that heard from the current leader within the minimum election timeout does not
    grant votes (nor update its term), so a removed or partitioned server cannot disrupt.

    Reference: §6
    """
    cluster = Cluster(IDS)
    cluster.elect("n1")
    follower = cluster.node("n2")
    follower.step(Message(MessageType.VOTE, "n3", "n2", 5, 1, 100))
    assert follower.status().term == 1
    assert cluster.process_ready("n2") is None or not cluster.queues["n3"]


# -- randomized checks of the safety properties (Figure 3) -----------------------------------------


class CheckedCluster(Cluster):
    """A cluster that checks the durability rule on every Ready before sending its messages."""

    def __init__(self, node_ids: tuple[str, ...], config: RaftConfig, seed: int) -> None:
        super().__init__(node_ids, config, seed)
        self.read_floors: dict[bytes, int] = {}

    def process_ready(self, node_id: str) -> Ready | None:
        peer = self.peers[node_id]
        if not peer.node.has_ready():
            return None
        ready = peer.node.ready()
        if ready.snapshot is not None:
            peer.storage.apply_snapshot(ready.snapshot)
        peer.storage.append(ready.entries)
        if ready.hard_state is not None:
            peer.storage.set_hard_state(ready.hard_state)
        durable, _ = peer.storage.initial_state()
        for message in ready.messages:
            _check_durable_before_send(message, durable, peer.storage, self.seed)
            self.send(message)
        peer.applied.extend(ready.committed_entries)
        peer.read_states.extend(ready.read_states)
        peer.node.advance(ready)
        return ready


class EarlySendCluster(CheckedCluster):
    """A leader sends before it persists when its Ready allows (thesis §10.2.1), and now and
    then crashes before persisting, losing that Ready's entries and hard state."""

    def __init__(self, node_ids: tuple[str, ...], config: RaftConfig, seed: int) -> None:
        super().__init__(node_ids, config, seed)
        self.crash_rng = random.Random(seed)
        self.crashes = 0

    def process_ready(self, node_id: str) -> Ready | None:
        peer = self.peers[node_id]
        if not peer.node.has_ready():
            return None
        ready = peer.node.ready()
        if not ready.send_while_persisting:
            durable, _ = peer.storage.initial_state()
            return self._finish(peer, ready, durable, sent=False)
        durable, _ = peer.storage.initial_state()
        for message in ready.messages:
            _check_durable_before_send(message, durable, peer.storage, self.seed)
            self.send(message)
        if ready.entries and self.crash_rng.random() < 0.1:
            self.crashes += 1
            self.restart(node_id)  # nothing of this Ready reached the disk
            return ready
        return self._finish(peer, ready, durable, sent=True)

    def _finish(self, peer: Peer, ready: Ready, durable: HardState, sent: bool) -> Ready:
        if ready.snapshot is not None:
            peer.storage.apply_snapshot(ready.snapshot)
        peer.storage.append(ready.entries)
        if ready.hard_state is not None:
            peer.storage.set_hard_state(ready.hard_state)
        durable, _ = peer.storage.initial_state()
        for message in () if sent else ready.messages:
            _check_durable_before_send(message, durable, peer.storage, self.seed)
            self.send(message)
        peer.applied.extend(ready.committed_entries)
        peer.read_states.extend(ready.read_states)
        peer.node.advance(ready)
        return ready


def _check_durable_before_send(
    message: Message, durable: HardState, storage: MemoryStorage, seed: int
) -> None:
    if message.type in (MessageType.PRE_VOTE, MessageType.PRE_VOTE_RESP) or message.term == 0:
        return
    assert message.term <= durable.term, f"term not durable (seed={seed})"
    # A vote may be superseded within the same Ready by a later term; that later state is
    # what is durable, and it forbids going back, so the message is still safe to send.
    superseded = durable.term > message.term
    if message.type is MessageType.VOTE_RESP and not message.reject and not superseded:
        assert durable.vote == message.to, f"vote not durable (seed={seed})"
    if message.type is MessageType.VOTE and not superseded:
        assert durable.vote == message.sender, f"self-vote not durable (seed={seed})"
    if message.type is MessageType.APP_RESP and not message.reject:
        assert storage.last_index() >= message.index, f"entries not durable (seed={seed})"


def _random_run(seed: int, steps: int, early_send: bool = False) -> CheckedCluster:
    rng = random.Random(seed)
    ids = tuple(f"n{i}" for i in range(1, 6))
    kind = EarlySendCluster if early_send else CheckedCluster
    cluster = kind(ids, RaftConfig(election_timeout_ticks=6, heartbeat_ticks=1), seed)
    leaders_by_term: dict[int, str] = {}
    committed: dict[int, tuple[int, bytes, int]] = {}  # index -> (term, data, term seen)
    for step in range(steps + 300):
        if step < steps:
            _random_action(cluster, rng, step)
        else:  # a calm phase at the end (only loss), so reads and writes are surely exercised
            cluster.heal()
            _calm_action(cluster, rng, step)
        for node_id, peer in cluster.peers.items():
            status = peer.node.status()
            if status.role is Role.LEADER:
                first = leaders_by_term.setdefault(status.term, node_id)
                assert first == node_id, f"two leaders in term {status.term} (seed={seed})"
            for entry in peer.applied:
                known = committed.setdefault(entry.index, (entry.term, entry.data, status.term))
                assert known[:2] == (entry.term, entry.data), f"state machines differ (seed={seed})"
        _check_log_matching(cluster, seed)
        _check_leader_completeness(cluster, committed, seed)
    served = _check_reads_not_stale(cluster, seed)
    assert served > 0, f"no read was served (seed={seed})"
    assert len(committed) > 10, f"hardly anything was committed (seed={seed})"
    return cluster


def _calm_action(cluster: Cluster, rng: random.Random, step: int) -> None:
    ids = sorted(cluster.peers)
    cluster.tick(rng.choice(ids))
    if rng.random() < 0.3:
        with contextlib.suppress(NotLeaderError):
            cluster.node(rng.choice(ids)).propose(b"c%d" % step)
    if rng.random() < 0.3:
        _issue_read(cluster, rng.choice(ids), step)
    for node_id in ids:
        cluster.process_ready(node_id)
    for node_id in ids:
        _deliver_some(cluster, rng, node_id)


def _random_action(cluster: Cluster, rng: random.Random, step: int) -> None:
    ids = sorted(cluster.peers)
    roll = rng.random()
    if roll < 0.008:
        cluster.heal()
        shape = rng.random()
        leaders = cluster.leaders()
        if shape < 0.3 and leaders:
            cluster.isolate(rng.choice(leaders))
        elif shape < 0.6:
            shuffled = rng.sample(ids, len(ids))
            cut = rng.randrange(1, len(ids))
            cluster.partition(shuffled[:cut], shuffled[cut:])
    elif roll < 0.25:
        cluster.tick(rng.choice(ids))
    elif roll < 0.35:
        with contextlib.suppress(NotLeaderError):
            cluster.node(rng.choice(ids)).propose(b"c%d" % step)
    elif roll < 0.4:
        _issue_read(cluster, rng.choice(ids), step)
    elif roll < 0.65:
        cluster.process_ready(rng.choice(ids))
    else:
        _deliver_some(cluster, rng, rng.choice(ids))


def _issue_read(cluster: Cluster, node_id: str, step: int) -> None:
    """A read whose answer must cover everything committed anywhere when it was asked (§8)."""
    assert isinstance(cluster, CheckedCluster)
    context = b"r%d" % step
    cluster.read_floors[context] = max(p.node.status().commit for p in cluster.peers.values())
    cluster.node(node_id).read_index(context)


def _check_reads_not_stale(cluster: CheckedCluster, seed: int) -> int:
    served = 0
    for peer in cluster.peers.values():
        for read in peer.read_states:
            floor = cluster.read_floors[read.request_ctx]
            assert read.index >= floor, f"stale read {read} below commit {floor} (seed={seed})"
            served += 1
    return served


def _deliver_some(cluster: Cluster, rng: random.Random, node_id: str) -> None:
    queue, cluster.queues[node_id] = cluster.queues[node_id], []
    rng.shuffle(queue)  # reordering
    for message in queue:
        if rng.random() < 0.9:  # loss
            cluster.node(node_id).step(message)
        if rng.random() < 0.03:  # duplication
            cluster.queues[node_id].append(message)


def _check_log_matching(cluster: Cluster, seed: int) -> None:
    logs = {}
    for node_id, peer in cluster.peers.items():
        log = peer.node.raft.log
        logs[node_id] = [log.term(i) for i in range(1, log.last_index() + 1)]
    ids = sorted(logs)
    for a in ids:
        for b in ids:
            shared = min(len(logs[a]), len(logs[b]))
            for i in range(shared - 1, -1, -1):
                if logs[a][i] == logs[b][i]:
                    assert logs[a][: i + 1] == logs[b][: i + 1], f"log matching (seed={seed})"
                    break


def _check_leader_completeness(
    cluster: Cluster, committed: dict[int, tuple[int, bytes, int]], seed: int
) -> None:
    for peer in cluster.peers.values():
        status = peer.node.status()
        if status.role is not Role.LEADER:
            continue
        log = peer.node.raft.log
        for index, (term, _, seen_in_term) in committed.items():
            if status.term > seen_in_term:
                assert log.match_term(index, term), f"leader lacks committed {index} (seed={seed})"


@pytest.mark.parametrize("seed", range(12))
def test_safety_properties_hold_under_random_schedules(seed: int) -> None:
    """Election safety (one leader per term), log matching, leader completeness and state
    machine safety hold under random ticks, partitions, loss, duplication and reordering; and
    no read is ever answered below an index committed anywhere before it was asked (§8).

    Reference: §5.4.3
    """
    _random_run(seed, steps=2_000)


@pytest.mark.parametrize("seed", range(6))
def test_safety_holds_when_leaders_send_while_persisting_and_crash_first(seed: int) -> None:
    """The same properties when a leader sends its appends before writing its own log and
    sometimes crashes before that write: an entry counts as the leader's only once stored, so
    nothing acknowledged can be lost with the crash.

    Reference: thesis §10.2.1
    """
    cluster = _random_run(seed, steps=2_000, early_send=True)
    assert isinstance(cluster, EarlySendCluster)
    assert cluster.crashes > 0, f"no leader crashed before persisting (seed={seed})"
