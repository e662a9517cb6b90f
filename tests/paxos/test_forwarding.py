"""A preferred proposer per key: forwarding to it, falling back when it does not answer, and
a forwarded command applied at most once whichever proposers ran it. Messages are delivered by
hand (the :class:`~tests.paxos.test_paper.Cluster` of the rule tests), so each interleaving is
chosen."""

from __future__ import annotations

import pytest

from crdtstream import wire
from crdtstream.errors import DecodeError
from crdtstream.paxos.node import PaxosConfig, proposer_ranking
from crdtstream.paxos.types import (
    ForwardAnswer,
    Message,
    MessageType,
    decode_messages,
    encode_messages,
)
from crdtstream.raft.commands import Command, Result, command_body, request_digest
from crdtstream.raft.state_machine import KeyView
from tests.paxos.sim import value_of
from tests.paxos.test_paper import IDS, Cluster, add

FORWARDING = PaxosConfig(forward_timeout_min_ticks=4, forward_timeout_max_ticks=12)
LEADER, SECOND, THIRD = proposer_ranking("k", IDS)


def test_the_ranking_is_the_same_everywhere_and_spreads_keys() -> None:
    assert proposer_ranking("k", list(reversed(IDS))) == [LEADER, SECOND, THIRD]
    leaders = {proposer_ranking(f"key-{n}", IDS)[0] for n in range(30)}
    assert leaders == set(IDS)


def test_a_write_at_another_node_is_forwarded_and_runs_in_the_leaders_round() -> None:
    cluster = Cluster(config=FORWARDING)
    third = cluster.nodes[THIRD]
    operation = third.submit("k", add(5, 1), 100)
    cluster.drain()
    assert [(m.type, m.to) for m in cluster.in_flight] == [(MessageType.FORWARD, LEADER)]
    outcome = cluster.finish(THIRD, operation)
    assert outcome.answer == Result(ok=True, applied=True, value=5)
    assert third.counters.rounds_started == 0
    assert third.counters.forwards_answered == 1
    assert cluster.nodes[LEADER].counters.forwards_served == 1


def test_writes_from_every_node_on_one_key_never_duel() -> None:
    """The point of a proposer per key: every node's writes to the hot key go through one
    proposer, so no ballot conflicts, and after its first round it skips PREPARE."""
    cluster = Cluster(config=FORWARDING)
    operations = []
    for sequence in range(1, 5):
        for node_id in IDS:
            node = cluster.nodes[node_id]
            operations.append((node_id, node.submit("k", add(1, sequence, node_id), 100)))
        cluster.deliver()
    for node_id, operation in operations:
        assert cluster.finish(node_id, operation).answer is not None
    read = cluster.finish(THIRD, cluster.nodes[THIRD].read("k", 100))
    assert value_of(read.answer) == 12  # type: ignore[arg-type]
    assert all(node.counters.rounds_conflicted == 0 for node in cluster.nodes.values())
    leader = cluster.nodes[LEADER].counters
    assert leader.rounds_one_round_trip >= 1
    assert leader.rounds_started == leader.rounds_succeeded


def test_when_the_leader_is_down_the_forwarder_sends_on_to_the_next_then_skips_it() -> None:
    cluster = Cluster(config=FORWARDING)
    alive = (SECOND, THIRD)
    third = cluster.nodes[THIRD]
    second = cluster.nodes[SECOND]
    outcome = cluster.finish(
        THIRD, third.submit("k", add(2, 1), 100), lambda m: m.sender in alive and m.to in alive
    )
    assert outcome.answer == Result(ok=True, applied=True, value=2)
    assert third.counters.proposers_suspected == 1
    # Not proposed here: sent on to the next proposer of the ranking, which ran it.
    assert third.counters.forwards_rerouted == 1
    assert third.counters.forward_fallbacks == 0
    assert third.counters.rounds_started == 0
    assert second.counters.forwards_served == 1
    # Suspected: the next write goes to the second proposer of the ranking, at once.
    third.submit("k", add(3, 2), 100)
    cluster.drain()
    assert [(m.type, m.to) for m in cluster.in_flight] == [(MessageType.FORWARD, SECOND)]
    between_alive = lambda m: m.sender in alive and m.to in alive  # noqa: E731
    # SECOND has not heard from the leader yet: it forwards, times out, and proposes itself,
    # being the next of the ranking...
    cluster.finish(SECOND, second.submit("k", add(4, 1, "second"), 100), between_alive)
    assert second.counters.forward_fallbacks == 1
    assert second.counters.forwards_rerouted == 0
    # ...and from then on proposes at once, serving THIRD's forwards as well.
    second.submit("k", add(5, 2, "second"), 100)
    cluster.drain()
    assert {m.type for m in cluster.in_flight if m.sender == SECOND} <= {
        MessageType.PREPARE,
        MessageType.ACCEPT,
        MessageType.FORWARDED,
    }
    read = cluster.finish(SECOND, second.read("k", 100), between_alive)
    assert value_of(read.answer) == 14  # type: ignore[arg-type]
    assert second.counters.forwards_served == 2


def test_forwarders_of_a_cut_off_leader_agree_on_the_next_proposer_and_do_not_duel() -> None:
    """The leader of a key is cut off while two nodes wait on it with a write each. Both time
    out at the same tick; both send their write on to the second of the ranking, which puts
    them in its rounds: one proposer for the key, so no ballot is rejected and no round
    retried. (Each forwarder proposing its own write would duel the other.)"""
    ids = ("a", "b", "c", "d", "e")
    leader, second, *_, fourth, fifth = proposer_ranking("k", ids)
    cluster = Cluster(ids, config=FORWARDING)
    sent: list[Message] = []

    def cut_off(message: Message) -> bool:
        sent.append(message)
        return leader not in (message.sender, message.to)

    writes = [
        (fourth, cluster.nodes[fourth].submit("k", add(2, 1, fourth), 100)),
        (fifth, cluster.nodes[fifth].submit("k", add(3, 1, fifth), 100)),
    ]
    for node_id, operation in writes:
        assert cluster.finish(node_id, operation, cut_off).answer is not None
    assert [n.counters.rounds_conflicted for n in cluster.nodes.values()] == [0] * len(ids)
    assert not any(m.type is MessageType.REJECT for m in sent)
    forwards = [(m.sender, m.to) for m in sent if m.type is MessageType.FORWARD]
    assert sorted(forwards) == sorted(
        [(fourth, leader), (fifth, leader), (fourth, second), (fifth, second)]
    )
    for node_id in (fourth, fifth):
        counters = cluster.nodes[node_id].counters
        assert (counters.forwards_rerouted, counters.forward_fallbacks) == (1, 0)
        assert counters.rounds_started == 0
    assert cluster.nodes[second].counters.forwards_served == 2
    read = cluster.finish(second, cluster.nodes[second].read("k", 100), cut_off)
    assert value_of(read.answer) == 5  # type: ignore[arg-type]


def test_the_forwarder_that_ranks_next_proposes_and_the_other_sends_to_it() -> None:
    """Three nodes, the leader cut off: of the two forwarders the one that ranks next after
    the leader proposes its own write, the other sends its write on to it. No REJECT."""
    cluster = Cluster(config=FORWARDING)
    sent: list[Message] = []

    def cut_off(message: Message) -> bool:
        sent.append(message)
        return LEADER not in (message.sender, message.to)

    writes = [
        (SECOND, cluster.nodes[SECOND].submit("k", add(2, 1, SECOND), 100)),
        (THIRD, cluster.nodes[THIRD].submit("k", add(3, 1, THIRD), 100)),
    ]
    for node_id, operation in writes:
        assert cluster.finish(node_id, operation, cut_off).answer is not None
    second, third = cluster.nodes[SECOND].counters, cluster.nodes[THIRD].counters
    assert not any(m.type is MessageType.REJECT for m in sent)
    assert second.rounds_conflicted == third.rounds_conflicted == 0
    assert (second.forward_fallbacks, second.forwards_rerouted, second.forwards_served) == (1, 0, 1)
    assert (third.forward_fallbacks, third.forwards_rerouted, third.rounds_started) == (0, 1, 0)


def test_operations_that_fall_back_together_go_in_one_round() -> None:
    """The leader is cut off while the next of the ranking waits on it with three writes:
    when it falls back, all three go in one round, not the first alone and the others in a
    round after it."""
    cluster = Cluster(config=FORWARDING)
    second = cluster.nodes[SECOND]
    writes = [second.submit("k", add(1, sequence, SECOND), 100) for sequence in (1, 2, 3)]
    cut_off = lambda m: LEADER not in (m.sender, m.to)  # noqa: E731
    for operation in writes:
        assert cluster.finish(SECOND, operation, cut_off).answer is not None
    assert second.counters.forward_fallbacks == 3
    assert second.counters.rounds_started == second.counters.rounds_succeeded == 1


def test_an_operation_is_sent_on_at_most_once_per_other_acceptor() -> None:
    """Every proposer it is sent to stays silent (their answers are lost) and each suspicion
    runs out after a tick, so the ranking's first proposer is never passed over for long: the
    operation is not sent round the ranking until its deadline but proposed here after one
    hop per other acceptor."""
    config = PaxosConfig(forward_timeout_min_ticks=4, forward_timeout_max_ticks=12, suspect_ticks=1)
    cluster = Cluster(config=config)
    third = cluster.nodes[THIRD]
    sent: list[Message] = []

    def answers_lost(message: Message) -> bool:
        sent.append(message)
        return message.type is not MessageType.FORWARDED

    outcome = cluster.finish(THIRD, third.submit("k", add(1, 1), 400), answers_lost)
    assert outcome.answer == Result(ok=True, applied=True, value=1)
    forwards = [m.to for m in sent if m.type is MessageType.FORWARD]
    assert forwards == [LEADER, SECOND, LEADER]
    assert third.counters.forwards_rerouted == len(IDS) - 1
    assert third.counters.forward_fallbacks == 1


def test_a_forward_whose_deadline_comes_before_its_fallback_fails_at_the_deadline() -> None:
    """The deadline of a forwarded write is looked at on its own tick, not only at the
    fallback's: with a silent leader it fails then, its outcome unknown (the leader may have
    applied it), and is neither sent on nor proposed here."""
    cluster = Cluster(config=FORWARDING)
    third = cluster.nodes[THIRD]
    operation = third.submit("k", add(1, 1), 3)
    assert third.forward_timeout_ticks() > 3
    for _ in range(2):
        third.tick()
    cluster.drain()
    assert (THIRD, operation) not in cluster.outcomes
    third.tick()
    cluster.drain()
    outcome = cluster.outcomes[(THIRD, operation)]
    assert outcome.unknown
    assert "outcome is unknown" in outcome.error
    assert third.pending == 0
    for _ in range(2 * FORWARDING.forward_timeout_max_ticks):
        third.tick()
    assert (third.counters.forwards_rerouted, third.counters.forward_fallbacks) == (0, 0)
    assert third.counters.proposers_suspected == 0


def test_a_leader_that_completes_other_forwards_is_slow_not_gone() -> None:
    """An unanswered forward past its timeout is not enough to pass the leader over while the
    leader keeps completing this node's other forwards: the wait starts again. Once the
    leader has been silent for half a timeout, it is suspected."""
    cluster = Cluster(config=FORWARDING)
    third = cluster.nodes[THIRD]
    lost = third.submit("k", add(1, 1), 200)
    not_lost = lambda m: not (m.type is MessageType.FORWARDED and m.operation == lost)  # noqa: E731
    for sequence in range(2, 2 + 2 * FORWARDING.forward_timeout_max_ticks):
        third.submit("k", add(1, sequence), 200)
        cluster.deliver(not_lost)
        for node in cluster.nodes.values():
            node.tick()
    assert third.counters.proposers_suspected == 0
    assert third.pending == 1
    for _ in range(third.forward_timeout_ticks()):
        third.tick()
    assert third.counters.proposers_suspected == 1
    assert third.counters.forwards_rerouted == 1
    outcome = cluster.finish(THIRD, lost)
    assert outcome.answer == Result(ok=True, applied=True, value=1)  # the leader's, not again


def test_the_leader_is_tried_again_once_its_suspicion_ran_out() -> None:
    config = PaxosConfig(
        forward_timeout_min_ticks=4, forward_timeout_max_ticks=12, suspect_ticks=30
    )
    cluster = Cluster(config=config)
    third = cluster.nodes[THIRD]
    cluster.finish(
        THIRD, third.submit("k", add(1, 1), 100), lambda m: LEADER not in (m.sender, m.to)
    )
    assert third.proposer_of("k") == SECOND
    for _ in range(30):
        third.tick()
    assert third.proposer_of("k") == LEADER


def test_a_suspected_leader_that_is_heard_from_again_leads_again() -> None:
    """A healed partition: the first message from the suspected leader (here its answer as an
    acceptor) ends the suspicion, so the forwarder does not keep proposing beside it."""
    cluster = Cluster(config=FORWARDING)
    third = cluster.nodes[THIRD]
    cut_off = lambda m: LEADER not in (m.sender, m.to)  # noqa: E731
    cluster.finish(THIRD, third.submit("k", add(1, 1), 100), cut_off)
    assert third.proposer_of("k") == SECOND
    cluster.finish(THIRD, third.submit("j", add(1, 2, key="j"), 100))  # healed
    assert third.proposer_of("k") == LEADER


@pytest.mark.parametrize("idempotency", [False, True])
def test_a_command_run_by_the_leader_and_again_by_its_forwarder_applies_once(
    idempotency: bool,
) -> None:
    """The leader applies the forwarded write, but its answer is lost: the forwarder falls
    back and proposes the same command itself. The command's session (or its idempotency key,
    for a client that opens a fresh session per attempt) makes the second round answer the
    first one's result instead of adding again."""
    cluster = Cluster(config=FORWARDING)
    third = cluster.nodes[THIRD]
    command = add(7, 1, "writer")
    if idempotency:
        digest = request_digest("k", "counter", "add", 7, None, 0)
        command = Command("writer", 1, "k", "counter", "add", 7, 0, None, "write-1", digest)
    operation = third.submit("k", command, 200)
    cluster.deliver(lambda m: m.type is not MessageType.FORWARDED)
    assert value_of(cluster.finish(LEADER, cluster.nodes[LEADER].read("k", 100)).answer) == 7  # type: ignore[arg-type]
    outcome = cluster.finish(THIRD, operation, lambda m: m.type is not MessageType.FORWARDED)
    # Sent on to the next proposer (whose answer is lost too), then proposed here.
    assert (third.counters.forwards_rerouted, third.counters.forward_fallbacks) == (1, 1)
    assert outcome.answer == Result(ok=True, applied=True, value=7)
    read = cluster.finish(SECOND, cluster.nodes[SECOND].read("k", 100))
    assert value_of(read.answer) == 7  # type: ignore[arg-type]


def test_an_answer_meant_for_a_forwarder_before_its_restart_is_not_delivered() -> None:
    """Operation ids begin again at 1 after a restart: a late FORWARDED for the earlier run's
    operation 1 must not complete the new run's operation 1 (a write answered as a read)."""
    cluster = Cluster(config=FORWARDING)
    cluster.nodes[THIRD].submit("k", add(5, 1), 100)
    late: list[Message] = []

    def hold_answers(message: Message) -> bool:
        if message.type is MessageType.FORWARDED:
            late.append(message)
            return False
        return True

    cluster.deliver(hold_answers)
    assert len(late) == 1
    restarted = cluster.restart(THIRD, seed=99)
    read = restarted.read("k", 100)
    assert read == late[0].operation
    restarted.step(late[0])
    cluster.drain()
    assert (THIRD, read) not in cluster.outcomes
    assert restarted.counters.stale_messages == 1
    outcome = cluster.finish(THIRD, read)
    assert value_of(outcome.answer) == 5  # type: ignore[arg-type]


def test_a_forwarded_read_is_a_full_round_at_the_leader() -> None:
    """A read forwarded to the leader still needs a majority to accept the identity change:
    with the leader cut off from the other acceptors it never answers from its own record,
    which another proposer has overtaken meanwhile."""
    ids = ("a", "b", "c", "d", "e")
    leader, second, *_, forwarder = proposer_ranking("k", ids)
    cluster = Cluster(ids, config=FORWARDING)
    cluster.finish(leader, cluster.nodes[leader].submit("k", add(1, 1), 100))
    # The second proposer, after the leader failed it once, changes the key without it.
    without_leader = lambda m: leader not in (m.sender, m.to)  # noqa: E731
    other = cluster.nodes[second]
    cluster.finish(second, other.submit("k", add(10, 1, "other"), 200), without_leader)
    assert other.counters.forward_fallbacks == 1
    read = cluster.nodes[forwarder].read("k", 200)
    pair = (leader, forwarder)
    for _ in range(FORWARDING.forward_timeout_min_ticks):
        cluster.deliver(lambda m: m.sender in pair and m.to in pair)
        for node in cluster.nodes.values():
            node.tick()
    assert cluster.nodes[leader].counters.forwards_served == 1
    assert (forwarder, read) not in cluster.outcomes
    outcome = cluster.finish(forwarder, read)
    assert value_of(outcome.answer) == 11  # type: ignore[arg-type]


def test_forwarding_messages_round_trip_and_bad_ones_are_refused() -> None:
    command = add(3, 4)
    view = KeyView("counter", ((0, 1_000, 3),))
    echo = (0, "b#00000001")
    messages = [
        Message(MessageType.FORWARD, "b", "a", "k", echo, operation=9, timeout=40, command=command),
        Message(MessageType.FORWARD, "b", "a", "k", echo, operation=10, timeout=40),
    ]
    assert decode_messages(encode_messages(messages)) == messages
    for answer in (
        ForwardAnswer(Result(ok=True, applied=True, value=3)),
        ForwardAnswer(view),
        ForwardAnswer(None),
        ForwardAnswer(None, "timed out", unknown=True),
        ForwardAnswer(None, "does not restore", refused=True),
    ):
        answered = Message(MessageType.FORWARDED, "a", "b", "k", echo, operation=9, answer=answer)
        assert decode_messages(encode_messages([answered])) == [answered]

    def frame(*rest: object) -> bytes:
        row = [int(MessageType.FORWARD), "k", list(echo), [0, ""], b"", *rest]
        return wire.encode(wire.Tag.PAXOS_MESSAGE, ["b", "a", [row]])

    body = command_body(command)
    assert decode_messages(frame(1, 4, body))[0].command == command
    other_key = command_body(add(3, 4, key="j"))
    for bad in (
        frame(1, 4, other_key),  # a command for another key
        frame(0, 4, body),  # no operation id
        frame(1, -1, body),  # negative ticks
        frame(1, 4, ["not", "a", "command"]),
        frame(1, 4),  # a FORWARD without its fields
    ):
        with pytest.raises(DecodeError):
            decode_messages(bad)
    row = [int(MessageType.FORWARDED), "k", list(echo), [0, ""], b"", 1, 0, ["maybe", 1]]
    with pytest.raises(DecodeError):
        decode_messages(wire.encode(wire.Tag.PAXOS_MESSAGE, ["a", "b", [row]]))
