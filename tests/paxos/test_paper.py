"""CASPaxos rule by rule, each test citing the rule of Rystsov 2018 ("CASPaxos: Replicated State
Machines without logs", arXiv 1802.07000) it checks, plus the read-path bugs it must not have
(CASSANDRA-12126, scylladb#6299). Messages are delivered by hand, so every interleaving is
chosen, not hoped for."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from crdtstream.config import WindowConfig
from crdtstream.errors import DecodeError
from crdtstream.paxos.acceptor import Acceptor
from crdtstream.paxos.node import Outcome, PaxosConfig, PaxosNode
from crdtstream.paxos.storage import MemoryAcceptorStorage, persist_ready
from crdtstream.paxos.types import (
    ZERO_BALLOT,
    AcceptorRecord,
    Message,
    MessageType,
    decode_messages,
    decode_record,
    encode_messages,
    encode_record,
)
from crdtstream.paxos.value import apply_batch
from crdtstream.raft.commands import Command, Result, request_digest
from crdtstream.raft.state_machine import KeyView
from tests.paxos.sim import value_of

WINDOW = WindowConfig(size_ms=1_000_000, allowed_lateness_ms=0, retention_windows=1)
VALUE = apply_batch(WINDOW, "k", b"", [Command("c", 1, "k", "counter", "add", 1, 0)])[0]
"""A key's value as it travels: a one-key state machine snapshot."""
IDS = ("a", "b", "c")
LEADERLESS = PaxosConfig(forward=False)
"""Every node proposes what it is asked (the paper's protocol, without a proposer per key):
the rules are checked with the proposers each test picks."""


def add(amount: int, sequence: int, client: str = "client", key: str = "k") -> Command:
    return Command(client, sequence, key, "counter", "add", amount, 0)


class Cluster:
    """Nodes whose messages wait in a list until a test delivers them (or drops them)."""

    def __init__(
        self, ids: tuple[str, ...] = IDS, seed: int = 1, config: PaxosConfig = LEADERLESS
    ) -> None:
        rng = random.Random(seed)
        self.config = config
        self.storages = {node_id: MemoryAcceptorStorage() for node_id in ids}
        self.nodes = {
            node_id: PaxosNode(node_id, ids, WINDOW, random.Random(rng.random()), config)
            for node_id in ids
        }
        self.in_flight: list[Message] = []
        self.outcomes: dict[tuple[str, int], Outcome] = {}

    def restart(self, node_id: str, seed: int) -> PaxosNode:
        storage = self.storages[node_id]
        records = storage.load()
        node = PaxosNode(node_id, IDS, WINDOW, random.Random(seed), self.config, records)
        self.nodes[node_id] = node
        return node

    def drain(self) -> None:
        for node_id, node in self.nodes.items():
            while node.has_ready():
                ready = node.ready()
                persist_ready(self.storages[node_id], ready)
                self.in_flight.extend(ready.messages)
                for outcome in ready.outcomes:
                    self.outcomes[(node_id, outcome.operation_id)] = outcome
                node.advance(ready)

    def deliver(self, passes: Callable[[Message], bool] = lambda message: True) -> None:
        """Deliver every message in flight that ``passes``; drop the others. Repeat until none
        is left."""
        self.drain()
        while self.in_flight:
            batch, self.in_flight = self.in_flight, []
            for message in batch:
                if passes(message):
                    self.nodes[message.to].step(message)
            self.drain()

    def finish(
        self,
        node_id: str,
        operation: int,
        passes: Callable[[Message], bool] = lambda message: True,
    ) -> Outcome:
        """Deliver and tick (conflicts back off) until ``operation`` has its outcome."""
        for _ in range(200):
            self.deliver(passes)
            if (node_id, operation) in self.outcomes:
                return self.outcomes[(node_id, operation)]
            for node in self.nodes.values():
                node.tick()
        raise AssertionError(f"operation {operation} at {node_id} never finished")


def only_between(*ids: str) -> Callable[[Message], bool]:
    return lambda message: message.sender in ids and message.to in ids


# -- acceptor: §2.2 "Prepare" and "Accept" --


def prepare(ballot: tuple[int, str], sender: str = "p") -> Message:
    return Message(MessageType.PREPARE, sender, "a", "k", ballot)


def accept(ballot: tuple[int, str], value: bytes, sender: str = "p") -> Message:
    return Message(MessageType.ACCEPT, sender, "a", "k", ballot, ZERO_BALLOT, value)


def test_prepare_returns_a_conflict_for_a_ballot_lower_than_one_it_saw() -> None:
    """§2.2, acceptor on prepare: "Returns a conflict if it already saw a greater ballot
    number" — and names that ballot, so the proposer can fast-forward."""
    acceptor = Acceptor("a")
    acceptor.step(prepare((5, "q")))
    answer = acceptor.step(prepare((4, "p")))
    assert answer.type is MessageType.REJECT
    assert answer.accepted == (5, "q")
    assert acceptor.record("k").promised == (5, "q")


def test_prepare_persists_the_promise_and_returns_the_accepted_value() -> None:
    """§2.2: "Persists the ballot number as a promise and returns a confirmation either with
    an empty value ... or with a tuple of an accepted value and its ballot number"."""
    acceptor = Acceptor("a")
    assert acceptor.step(prepare((1, "p"))).value == b""
    assert acceptor.take_unsynced() == {"k": AcceptorRecord((1, "p"))}
    acceptor.step(accept((1, "p"), b"v1"))
    acceptor.take_unsynced()
    answer = acceptor.step(prepare((2, "q")))
    assert (answer.type, answer.accepted, answer.value) == (MessageType.PROMISE, (1, "p"), b"v1")
    assert acceptor.take_unsynced() == {"k": AcceptorRecord((2, "q"), (1, "p"), b"v1")}


def test_accept_returns_a_conflict_below_the_promise_and_stores_at_or_above_it() -> None:
    """§2.2, acceptor on accept: "Returns a conflict if it already saw a greater ballot
    number. Erases the promise, marks the received tuple (ballot number, value) as the
    accepted value"."""
    acceptor = Acceptor("a")
    acceptor.step(prepare((3, "q")))
    assert acceptor.step(accept((2, "p"), b"old")).type is MessageType.REJECT
    assert acceptor.record("k").value == b""
    assert acceptor.step(accept((3, "q"), b"new")).type is MessageType.ACCEPTED
    assert acceptor.record("k") == AcceptorRecord((3, "q"), (3, "q"), b"new")
    # An accept above any promise (the promise went to another acceptor) is taken too.
    assert acceptor.step(accept((9, "r"), b"newer")).type is MessageType.ACCEPTED
    assert acceptor.step(prepare((8, "s"))).type is MessageType.REJECT


def test_a_duplicated_prepare_is_answered_again_without_a_new_record() -> None:
    acceptor = Acceptor("a")
    acceptor.step(prepare((1, "p")))
    acceptor.take_unsynced()
    assert acceptor.step(prepare((1, "p"))).type is MessageType.PROMISE
    assert acceptor.take_unsynced() == {}


# -- proposer: §2.2 "Prepare", "Accept" and the change function --


def test_the_change_applies_to_the_value_with_the_highest_ballot_among_a_majority() -> None:
    """§2.2, proposer: "picks the value of the tuple with the highest ballot number", applies
    the change function to it. Here a value accepted by one acceptor at a higher ballot than
    another's must win, even though it is in the minority of the promises' values."""
    cluster = Cluster()
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    a.submit("k", add(1, 1, "first"), 100)
    cluster.deliver()  # k = 1 everywhere
    # b's change reaches only b itself and c, at a higher ballot: k = 11 there.
    cluster.finish("b", b.submit("k", add(10, 1, "second"), 100), only_between("b", "c"))
    # c proposes with promises from a (k = 1, older ballot) and c (k = 11, newer ballot).
    c = cluster.nodes["c"]
    outcome = cluster.finish("c", c.read("k", 100), only_between("a", "c"))
    assert isinstance(outcome.answer, KeyView)
    assert value_of(outcome.answer) == 11


def test_no_accept_before_a_majority_of_promises_and_no_answer_before_a_majority_of_accepts() -> (
    None
):
    """§2.2: the proposer "waits for the F+1 confirmations" of prepare before it sends
    accepts, and for F+1 confirmations of accept before it answers the client."""
    cluster = Cluster()
    a = cluster.nodes["a"]
    operation = a.submit("k", add(1, 1), 100)
    # Only a's own acceptor has answered: one promise out of three.
    cluster.drain()
    assert {m.type for m in cluster.in_flight} == {MessageType.PREPARE}
    assert ("a", operation) not in cluster.outcomes
    # Promises from b arrive, accepts do not leave a: one accept (its own) of three.
    cluster.deliver(lambda message: message.type is not MessageType.ACCEPT)
    assert ("a", operation) not in cluster.outcomes
    assert cluster.storages["a"].records["k"].accepted[0] >= 1


def test_a_conflict_fast_forwards_the_counter_past_the_ballot_it_names() -> None:
    """§2.2: on a conflict, the proposer "should fast-forward its counter"."""
    cluster = Cluster()
    a = cluster.nodes["a"]
    for acceptor_id in ("b", "c"):
        cluster.nodes[acceptor_id].acceptor.step(
            Message(MessageType.PREPARE, "x", acceptor_id, "k", (41, "x"))
        )
    operation = a.submit("k", add(1, 1), 400)
    for _ in range(60):  # let the backoff pass and the retry succeed
        cluster.deliver()
        a.tick()
        if ("a", operation) in cluster.outcomes:
            break
    outcome = cluster.outcomes[("a", operation)]
    assert isinstance(outcome.answer, Result)
    assert outcome.answer.applied
    assert cluster.storages["b"].records["k"].accepted[0] > 41
    assert a.counters.rounds_conflicted >= 1


def test_the_local_acceptor_answers_only_after_its_record_was_persisted() -> None:
    """A promise counts only once durable: with a single acceptor (this node), nothing is
    accepted before the driver persisted the promise, and the outcome comes only after the
    accept was persisted too."""
    storage = MemoryAcceptorStorage()
    node = PaxosNode("a", ("a",), WINDOW, random.Random(3))
    operation = node.submit("k", add(5, 1), 100)
    first = node.ready()
    assert first.records["k"].promised[0] == 1
    assert first.records["k"].accepted == ZERO_BALLOT
    assert first.outcomes == ()
    persist_ready(storage, first)
    node.advance(first)
    second = node.ready()
    assert second.records["k"].value
    assert second.outcomes == ()
    persist_ready(storage, second)
    node.advance(second)
    third = node.ready()
    assert [outcome.operation_id for outcome in third.outcomes] == [operation]
    assert storage.sync_count == 2


def test_a_restarted_proposer_never_reuses_a_ballot_of_its_previous_run() -> None:
    """Ballots are unique per proposer (§2.2, "a pair of a counter and a proposer id"). A
    proposer that restarts counts from 1 again; its id carries a per-run nonce."""
    cluster = Cluster()
    before = cluster.nodes["a"].proposer_id
    after = cluster.restart("a", seed=99).proposer_id
    assert before != after
    assert before.split("#")[0] == after.split("#")[0] == "a"


def test_a_restarted_acceptor_keeps_its_promise() -> None:
    cluster = Cluster()
    cluster.nodes["a"].submit("k", add(1, 1), 100)
    cluster.deliver()
    promised = cluster.storages["b"].records["k"].promised
    restarted = cluster.restart("b", seed=5)
    assert restarted.acceptor.record("k").promised == promised
    stale = Message(MessageType.PREPARE, "c", "b", "k", (promised[0] - 1, "c#0"))
    restarted.step(stale)
    assert restarted.ready().messages[0].type is MessageType.REJECT


# -- reads: CASSANDRA-12126 and scylladb#6299 --


def test_a_read_writes_back_so_a_value_seen_once_is_seen_by_every_later_read() -> None:
    """A value accepted by one acceptor only (its proposer failed mid-accept), read through a
    majority that includes it, must be seen by a later read through the other majority. A
    read answered from promises alone (the Cassandra/Scylla bug) would return it once and then
    lose it; the identity change (§2.2, "a read is x -> x") writes it back first."""
    cluster = Cluster()
    a = cluster.nodes["a"]
    a.submit("k", add(7, 1), 100)
    # Promises from every acceptor, but the accept reaches only a's own acceptor.
    cluster.deliver(lambda message: message.type is not MessageType.ACCEPT)
    assert cluster.storages["a"].records["k"].value
    cluster.restart("a", seed=11)  # the writing proposer is gone; its acceptor kept the value
    first = cluster.finish("a", cluster.nodes["a"].read("k", 100), only_between("a", "b"))
    second = cluster.finish("c", cluster.nodes["c"].read("k", 100), only_between("b", "c"))
    seen = [first.answer, second.answer]
    assert [value_of(view) for view in seen] == [7, 7]  # type: ignore[arg-type]


def test_a_read_that_missed_a_partial_write_makes_it_unable_to_reappear() -> None:
    """scylladb#6299 the other way round: a read through the two acceptors that missed the
    partial write answers "nothing"; it writes that back with a higher ballot, so a later read
    through the acceptor holding the partial write cannot bring it back."""
    cluster = Cluster()
    cluster.nodes["a"].submit("k", add(7, 1), 100)
    cluster.deliver(lambda message: message.type is not MessageType.ACCEPT)
    cluster.restart("a", seed=11)
    first = cluster.finish("b", cluster.nodes["b"].read("k", 100), only_between("b", "c"))
    second = cluster.finish("a", cluster.nodes["a"].read("k", 100), only_between("a", "b"))
    seen = [first.answer, second.answer]
    assert [value_of(view) for view in seen] == [0, 0]  # type: ignore[arg-type]


# -- operations, batches, retries, timeouts --


def test_a_batch_applies_in_order_and_the_quota_holds() -> None:
    cluster = Cluster()
    a = cluster.nodes["a"]
    ids = [
        a.submit("k", Command("c", n, "k", "counter", "conditional_add", 4, 0, 10), 100)
        for n in range(1, 5)
    ]
    cluster.deliver()
    results = [cluster.outcomes[("a", i)].answer for i in ids]
    assert [r.applied for r in results] == [True, True, False, False]  # type: ignore[union-attr]
    # The first write starts a round at once; the three queued behind it share the next one.
    assert a.counters.rounds_succeeded == 2


def test_a_retry_in_the_same_session_at_another_node_is_applied_once() -> None:
    """A write whose first attempt took effect unseen (the client timed out) and is retried
    through another proposer returns the first result, not a second application."""
    cluster = Cluster()
    cluster.finish("a", cluster.nodes["a"].submit("k", add(3, 1), 100))
    retry = cluster.finish("b", cluster.nodes["b"].submit("k", add(3, 1), 100))
    read = cluster.finish("c", cluster.nodes["c"].read("k", 100))
    assert retry.answer == Result(ok=True, applied=True, value=3)
    assert value_of(read.answer) == 3  # type: ignore[arg-type]


def test_an_idempotency_key_dedupes_across_sessions() -> None:
    cluster = Cluster()
    digest = request_digest("k", "counter", "add", 2, None, 0)
    first = Command("s1", 1, "k", "counter", "add", 2, 0, None, "order-1", digest)
    second = Command("s2", 1, "k", "counter", "add", 2, 0, None, "order-1", digest)
    cluster.finish("a", cluster.nodes["a"].submit("k", first, 100))
    cluster.finish("b", cluster.nodes["b"].submit("k", second, 100))
    read = cluster.finish("c", cluster.nodes["c"].read("k", 100))
    assert value_of(read.answer) == 2  # type: ignore[arg-type]


def test_a_timed_out_write_reports_an_unknown_outcome_once_it_was_sent_to_accept() -> None:
    cluster = Cluster()
    a = cluster.nodes["a"]
    sent = a.submit("k", add(1, 1), 3)
    cluster.deliver(lambda message: message.type is not MessageType.ACCEPT)  # accept lost
    never_sent = cluster.nodes["b"].submit("j", add(1, 1, key="j"), 3)
    cluster.deliver(lambda message: False)  # b's prepares lost: no majority
    for node_id in ("a", "b"):
        for _ in range(3):
            cluster.nodes[node_id].tick()
    cluster.drain()
    unknown = cluster.outcomes[("a", sent)]
    assert unknown.unknown
    assert "outcome is unknown" in unknown.error
    refused = cluster.outcomes[("b", never_sent)]
    assert not refused.unknown
    assert "not applied" in refused.error


def test_backoff_is_jittered_grows_with_attempts_and_stays_within_its_clamp() -> None:
    """Cassandra's ContentionStrategy: wait in [p50 * 0.66, clamp(p95 * 1.8^attempts))."""
    config = PaxosConfig(backoff_min_ticks=2, backoff_max_ticks=20)
    node = PaxosNode("a", IDS, WINDOW, random.Random(8), config)
    node._latencies.extend([4] * 20)
    first = [node.backoff_ticks(1) for _ in range(200)]
    late = [node.backoff_ticks(6) for _ in range(200)]
    assert len(set(first)) > 2, "not jittered"
    assert all(2 <= wait <= 8 for wait in first)  # p95 4 * 1.8 = 7.2
    assert max(late) == 20
    assert min(late) >= 2
    assert sum(late) > sum(first)


def test_messages_and_records_round_trip_and_bad_bytes_are_refused() -> None:
    messages = [
        Message(MessageType.PROMISE, "a", "b", "k", (3, "b#1"), (2, "c#9"), VALUE),
        Message(MessageType.PREPARE, "a", "b", "j", (4, "b#1")),
    ]
    assert decode_messages(encode_messages(messages)) == messages
    record = AcceptorRecord((5, "a#1"), (4, "b#2"), VALUE)
    assert decode_record(encode_record("k", record)) == ("k", record)
    not_a_value = Message(MessageType.ACCEPT, "a", "b", "k", (3, "b#1"), value=b"\x01value")
    for bad in (
        b"",
        b"\x01\x00\x78garbage",
        encode_record("k", record),
        encode_messages([not_a_value]),
    ):
        with pytest.raises(DecodeError):
            decode_messages(bad)


# -- the one-round-trip optimisation: §2.2.1 --


def test_the_next_change_by_the_same_proposer_skips_prepare() -> None:
    """§2.2.1: with the next prepare piggybacked on the accept, a proposer that changes a key
    again sends ACCEPT at once, and acceptors promise its next ballot when they accept."""
    cluster = Cluster()
    a = cluster.nodes["a"]
    cluster.finish("a", a.submit("k", add(1, 1), 100))
    promised = cluster.storages["b"].records["k"].promised
    assert promised > cluster.storages["b"].records["k"].accepted
    a.submit("k", add(2, 2), 100)
    cluster.drain()
    assert {m.type for m in cluster.in_flight} == {MessageType.ACCEPT}
    assert cluster.in_flight[0].ballot == promised
    read = cluster.finish("a", a.read("k", 100))
    assert value_of(read.answer) == 3  # type: ignore[arg-type]
    assert a.counters.rounds_one_round_trip == 2


def test_a_proposer_that_came_in_between_sends_the_fast_path_back_to_prepare() -> None:
    """The held promise is only as good as the acceptors' memory of it: another proposer's
    higher ballot makes them refuse the skipped-prepare ACCEPT, and the change retries with a
    full round on top of the other proposer's value."""
    cluster = Cluster()
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    cluster.finish("a", a.submit("k", add(1, 1), 100))
    cluster.finish("b", b.submit("k", add(10, 1, "other"), 100))
    outcome = cluster.finish("a", a.submit("k", add(100, 2), 100))
    assert outcome.answer == Result(ok=True, applied=True, value=111)
    assert a.counters.rounds_conflicted >= 1


def test_a_value_that_does_not_restore_fails_its_operations_as_refused() -> None:
    """A value taken with other windows (or corrupt, but well tagged) is never applied to: the
    round's operations fail as refused, and the proposer keeps serving."""
    cluster = Cluster()
    other_windows = WindowConfig(size_ms=10_000)
    foreign = apply_batch(other_windows, "k", b"", [add(1, 1)])[0]
    for node_id in IDS:
        cluster.nodes[node_id].acceptor.records["k"] = AcceptorRecord(
            (1, "x#1"), (1, "x#1"), foreign
        )
    outcome = cluster.finish("a", cluster.nodes["a"].submit("k", add(1, 2), 100))
    assert outcome.refused
    assert not outcome.unknown
    assert "does not restore" in outcome.error
    fine = cluster.finish("a", cluster.nodes["a"].submit("j", add(1, 3, key="j"), 100))
    assert fine.answer == Result(ok=True, applied=True, value=1)
