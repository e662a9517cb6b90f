"""Batching and routing of strong requests, seen through the frames handed to ``send``: the
client's requests and a voter's answers."""

from __future__ import annotations

import random
from typing import Any

from crdtstream import wire
from crdtstream.config import RaftConfig, WindowConfig
from crdtstream.engine.strong import StrongReplica
from crdtstream.engine.strong_client import StrongClient
from crdtstream.raft.state_machine import Command, Result, encode_command
from tests.crashable import CrashableStorage

VOTERS = ["v1", "v2", "v3"]


class Outbox:
    """The frames a client sent, as (destination, decoded body)."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, Any]] = []

    def send(self, destination: str, payload: bytes) -> None:
        self.frames.append((destination, wire.decode(payload)[1]))


def command(sequence: int) -> Command:
    return Command("client", sequence, "quota.k", "counter", "add", 1)


def answer_frame(leader: str | None, rows: list[list[Any]]) -> bytes:
    return wire.encode(wire.Tag.STRONG_RESPONSE, [leader, rows])


def test_requests_of_one_pump_leave_in_one_frame() -> None:
    outbox = Outbox()
    client = StrongClient(VOTERS, random.Random(1), outbox.send)
    for sequence in range(1, 41):
        client.submit(command(sequence), 100, lambda answer, error: None)
    client.read("quota.k", 100, lambda answer, error: None)
    client.process_ready()
    [(destination, rows)] = outbox.frames
    assert destination in VOTERS
    assert len(rows) == 41


def test_requests_go_to_the_leader_a_voter_names() -> None:
    outbox = Outbox()
    answers: list[object] = []
    client = StrongClient(VOTERS, random.Random(2), outbox.send)
    client.submit(command(1), 100, lambda answer, error: answers.append(answer))
    client.process_ready()
    [(first, [[request_id, *_]])] = outbox.frames
    leader = next(v for v in VOTERS if v != first)
    client.step(first, answer_frame(leader, [[request_id, "result", [True, True, 1, ""]]]))
    assert answers == [Result(ok=True, applied=True, value=1, error="")]
    for sequence in range(2, 12):
        client.submit(command(sequence), 100, lambda answer, error: None)
    client.process_ready()
    assert [destination for destination, _ in outbox.frames[1:]] == [leader]


def test_a_session_holds_writes_beyond_its_window_until_older_ones_finish() -> None:
    outbox = Outbox()
    client = StrongClient(VOTERS, random.Random(3), outbox.send, session_results_max=4)
    for sequence in range(1, 11):
        client.submit(command(sequence), 100, lambda answer, error: None)
    client.process_ready()
    [(voter, rows)] = outbox.frames
    base = rows[0][0]  # ids start at a random point each run
    assert [row[0] - base for row in rows] == [0, 1, 2, 3]  # sequences 1-4 only
    done = [[base, "result", [True, True, 1, ""]], [base + 1, "result", [True, True, 2, ""]]]
    client.step(voter, answer_frame(None, done))
    client.process_ready()
    assert [row[0] - base for row in outbox.frames[1][1]] == [4, 5]  # sequences 5 and 6


def test_a_malformed_answer_is_counted_and_the_rest_of_its_frame_served() -> None:
    outbox = Outbox()
    answers: list[object] = []
    client = StrongClient(VOTERS, random.Random(4), outbox.send)
    client.submit(command(1), 100, lambda answer, error: answers.append(answer))
    client.process_ready()
    [(voter, [[request_id, *_]])] = outbox.frames
    rows = [
        ["not an id", "result", None],
        [request_id, "read", None],  # a read's answer for a write: not this request's
        [request_id, "result", [True, True, 1, ""]],
    ]
    client.step(voter, answer_frame(None, rows))
    assert client.counters.malformed == 2
    assert len(answers) == 1
    assert isinstance(answers[0], Result)
    assert answers[0].applied


def test_a_voter_answers_the_requests_of_one_pump_in_one_frame_naming_the_leader() -> None:
    outbox = Outbox()
    replica = StrongReplica(
        "v1", CrashableStorage(["v1"]), RaftConfig(), WindowConfig(), random.Random(5), outbox.send
    )
    for _ in range(100):
        replica.tick()
        replica.process_ready()
    assert replica.is_leader
    rows: list[list[object]] = [[i, encode_command(command(i + 1)), None, 50] for i in range(20)]
    rows.append([20, None, "quota.k", 50])
    replica.step("c1", wire.encode(wire.Tag.STRONG_REQUEST, rows))
    replica.process_ready()
    [(destination, [leader, answers])] = outbox.frames
    assert (destination, leader) == ("c1", "v1")
    assert sorted(row[0] for row in answers) == list(range(21))
