"""The replicated state machine: kinds, windows, conditional adds, sessions and snapshots."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtstream.config import WindowConfig
from crdtstream.errors import ConfigError, DecodeError
from crdtstream.raft.commands import CLAIMS_HELD, request_digest
from crdtstream.raft.state_machine import (
    OPERATIONS,
    Command,
    Result,
    StateMachine,
    decode_command,
    decode_result,
    encode_command,
    encode_result,
)
from crdtstream.raft.types import Entry, EntryKind

TUMBLING = WindowConfig(size_ms=10_000, allowed_lateness_ms=5_000, retention_windows=3)


class Client:
    """Numbers its commands like a real client session does."""

    def __init__(self, machine: StateMachine, client_id: str = "client-1") -> None:
        self.machine = machine
        self.client_id = client_id
        self.sequence = 0

    def send(
        self, key: str, kind: str, operation: str, value: object = 0, **fields: object
    ) -> Result:
        self.sequence += 1
        command = Command(self.client_id, self.sequence, key, kind, operation, value, **fields)  # type: ignore[arg-type]
        return self.machine.apply(encode_command(command))


def newest_value(machine: StateMachine, key: str) -> object:
    view = machine.read(key)
    assert view is not None
    return view.windows[-1][2]


@pytest.mark.parametrize(
    ("kind", "operations", "expected"),
    [
        ("counter", [("add", 2), ("add", 3), ("add", -1)], 4),
        ("gauge", [("set", 2.5), ("set", 7)], 7),
        ("set", [("add", "x"), ("add", "y"), ("remove", "x"), ("add", "z")], ["y", "z"]),
        ("distinct", [("add", "x"), ("add", "y"), ("add", "x")], 2),
        (
            "distribution",
            [("observe", 3), ("observe", 1), ("observe", 5)],
            {"count": 3, "sum": 9, "min": 1, "max": 5},
        ),
        ("max", [("observe", 3), ("observe", 9), ("observe", 5)], 9),
        ("min", [("observe", 3), ("observe", -2), ("observe", 5)], -2),
    ],
)
def test_each_kind_applies_in_log_order(
    kind: str, operations: list[tuple[str, object]], expected: object
) -> None:
    machine = StateMachine(TUMBLING)
    client = Client(machine)
    for operation, value in operations:
        assert client.send("key", kind, operation, value).ok
    assert newest_value(machine, "key") == expected
    assert client.send("key", kind, "read").value == expected
    assert machine.read("key").kind == kind  # type: ignore[union-attr]


def test_conditional_add_applies_only_within_the_limit() -> None:
    client = Client(StateMachine(TUMBLING))
    outcomes = [client.send("quota", "counter", "conditional_add", 4, limit=10) for _ in range(4)]
    assert [result.applied for result in outcomes] == [True, True, False, False]
    assert [result.value for result in outcomes] == [4, 8, 8, 8]
    assert client.send("quota", "counter", "conditional_add", 2, limit=10).applied
    assert newest_value(client.machine, "quota") == 10


def test_a_retried_command_is_applied_once_and_answered_with_the_first_result() -> None:
    machine = StateMachine(TUMBLING)
    command = encode_command(Command("c", 1, "k", "counter", "add", 5))
    first = machine.apply(command)
    Client(machine, "other").send("k", "counter", "add", 1)
    assert machine.apply(command) == first
    assert newest_value(machine, "k") == 6


def test_sequences_may_arrive_out_of_order_within_the_session_window() -> None:
    machine = StateMachine(TUMBLING, session_results_max=4)
    for sequence in (2, 1, 3):
        assert machine.apply(
            encode_command(Command("c", sequence, "k", "counter", "add", 1))
        ).applied
    assert newest_value(machine, "k") == 3
    for sequence in range(4, 12):
        machine.apply(encode_command(Command("c", sequence, "k", "counter", "add", 1)))
    stale = machine.apply(encode_command(Command("c", 2, "k", "counter", "add", 1)))
    assert not stale.ok
    assert "too old" in stale.error
    assert newest_value(machine, "k") == 11


def test_least_recently_used_session_is_forgotten_first() -> None:
    machine = StateMachine(TUMBLING, sessions_max=2)
    commands = {name: encode_command(Command(name, 1, "k", "counter", "add", 1)) for name in "abc"}
    machine.apply(commands["a"])
    machine.apply(commands["b"])
    machine.apply(commands["a"])  # a retry refreshes a's session
    machine.apply(commands["c"])  # evicts b, the least recently used
    machine.apply(commands["a"])
    assert newest_value(machine, "k") == 3
    machine.apply(commands["b"])  # b's session is gone: the retry applies again
    assert newest_value(machine, "k") == 4


def test_tumbling_windows_are_separate_and_late_commands_are_counted() -> None:
    machine = StateMachine(TUMBLING)
    client = Client(machine)
    client.send("k", "counter", "add", 1, timestamp_ms=1_000)
    client.send("k", "counter", "add", 2, timestamp_ms=12_000)
    client.send("k", "counter", "add", 4, timestamp_ms=9_999)  # window 0 still open (lateness)
    assert machine.read("k").windows == ((0, 10_000, 5), (10_000, 20_000, 2))  # type: ignore[union-attr]
    client.send("k", "counter", "add", 8, timestamp_ms=25_000)
    late = client.send("k", "counter", "add", 16, timestamp_ms=3_000)
    assert not late.ok
    assert "late" in late.error
    assert machine.late_commands == 1
    assert machine.value("k", 3_000) == 5


def test_retention_keeps_the_newest_windows() -> None:
    machine = StateMachine(TUMBLING)
    client = Client(machine)
    for window in range(6):
        client.send("k", "counter", "add", window, timestamp_ms=window * 10_000)
    assert [start for start, _, _ in machine.read("k").windows] == [30_000, 40_000, 50_000]  # type: ignore[union-attr]


def test_hopping_windows_each_receive_the_event() -> None:
    hopping = WindowConfig(
        size_ms=10_000, slide_ms=5_000, allowed_lateness_ms=0, retention_windows=10
    )
    machine = StateMachine(hopping)
    client = Client(machine)
    client.send("k", "counter", "add", 1, timestamp_ms=7_000)
    assert machine.read("k").windows == ((0, 10_000, 1), (5_000, 15_000, 1))  # type: ignore[union-attr]
    refused = client.send("k", "counter", "conditional_add", 5, timestamp_ms=7_000, limit=5)
    assert not refused.applied
    assert client.send("k", "counter", "conditional_add", 4, timestamp_ms=7_000, limit=5).applied


def test_malformed_and_conflicting_commands_are_refused_and_counted() -> None:
    machine = StateMachine(TUMBLING)
    client = Client(machine)
    client.send("k", "counter", "add", 1)
    garbage = machine.apply(b"\x01\x00garbage")
    assert not garbage.ok
    assert "malformed" in garbage.error
    conflict = client.send("k", "gauge", "set", 3)
    assert not conflict.ok
    assert "counter" in conflict.error
    assert machine.rejected_commands == 2
    assert newest_value(machine, "k") == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "nope", "operation": "add"},
        {"kind": "gauge", "operation": "add"},
        {"kind": "set", "operation": "add", "value": 3},
        {"kind": "counter", "operation": "add", "value": float("nan")},
        {"kind": "counter", "operation": "add", "value": True},
        {"kind": "counter", "operation": "conditional_add", "value": 1},
        {"kind": "counter", "operation": "add", "value": 1, "limit": 5},
        {"kind": "counter", "operation": "add", "sequence": -1},
    ],
)
def test_invalid_commands_are_refused_at_construction(fields: dict[str, object]) -> None:
    arguments: dict[str, object] = {
        "client_id": "c",
        "sequence": 1,
        "key": "k",
        "value": 1,
        **fields,
    }
    with pytest.raises((ValueError, TypeError)):
        Command(**arguments)  # type: ignore[arg-type]


def test_commands_and_results_round_trip() -> None:
    command = Command("c", 7, "k", "counter", "conditional_add", 2.5, 1_000, 10)
    assert decode_command(encode_command(command)) == command
    result = Result(ok=True, applied=True, value={"count": 1}, error="")
    assert decode_result(encode_result(result)) == result
    with pytest.raises(DecodeError):
        decode_command(encode_result(result))
    with pytest.raises(DecodeError):
        decode_result(b"\x01\x00\x92\x73\x90")


def test_entries_without_commands_advance_the_applied_index() -> None:
    machine = StateMachine(TUMBLING)
    command = encode_command(Command("c", 1, "k", "counter", "add", 1))
    results = machine.apply_entries(
        [
            Entry(1, 1, EntryKind.EMPTY),
            Entry(1, 2, data=command),
            Entry(1, 3, EntryKind.CONF_CHANGE, b"x"),
        ]
    )
    assert results[0] is None
    assert results[2] is None
    assert results[1] is not None
    assert results[1].applied
    assert machine.applied_index == 3
    with pytest.raises(ValueError, match="already applied"):
        machine.apply_entry(Entry(1, 3, data=command))


def random_commands(rng: random.Random, count: int) -> list[bytes]:
    """A mixed log: every kind, retries, out-of-order and late timestamps, garbage."""
    kinds = {
        "c": "counter",
        "g": "gauge",
        "s": "set",
        "d": "distinct",
        "h": "distribution",
        "x": "max",
        "n": "min",
    }
    log: list[bytes] = []
    for sequence in range(count):
        if log and rng.random() < 0.1:
            log.append(rng.choice(log))
            continue
        if rng.random() < 0.03:
            log.append(b"\x01\x00garbage")
            continue
        key = rng.choice(list(kinds))
        kind = kinds[key]
        operation = rng.choice(sorted(OPERATIONS[kind]))
        value: str | int = (
            rng.choice("abcdef") if kind in ("set", "distinct") else rng.randint(-5, 20)
        )
        limit = rng.randint(0, 50) if operation == "conditional_add" else None
        timestamp = rng.randint(0, 60_000)
        client = f"client-{rng.randint(1, 4)}"
        # Some commands carry an idempotency key: retries from other sessions, reused keys.
        idempotency = ("", "")
        if rng.random() < 0.3:
            idempotency = (f"key-{rng.randint(1, 6)}", f"digest-{rng.randint(1, 2)}")
        log.append(
            encode_command(
                Command(
                    client, sequence, key, kind, operation, value, timestamp, limit, *idempotency
                )
            )
        )
    return log


@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(0, 80))
def test_snapshot_and_restore_midway_gives_the_same_machine(seed: int, cut: int) -> None:
    log = random_commands(random.Random(seed), 80)
    whole = StateMachine(TUMBLING)
    whole_results = [
        whole.apply_entry(Entry(1, index + 1, data=data)) for index, data in enumerate(log)
    ]
    first = StateMachine(TUMBLING)
    results = [
        first.apply_entry(Entry(1, index + 1, data=data)) for index, data in enumerate(log[:cut])
    ]
    second = StateMachine(TUMBLING)
    second.restore(first.snapshot())
    assert second.snapshot() == first.snapshot(), f"seed={seed}"
    results += [
        second.apply_entry(Entry(1, index + 1, data=data))
        for index, data in enumerate(log)
        if index >= cut
    ]
    assert results == whole_results, f"seed={seed}"
    assert second.snapshot() == whole.snapshot(), f"seed={seed}"
    for key in whole.key_names():
        assert second.read(key) == whole.read(key), f"seed={seed}"


def test_restore_refuses_other_windows_and_bad_bytes() -> None:
    machine = StateMachine(TUMBLING)
    Client(machine).send("k", "counter", "add", 1)
    image = machine.snapshot()
    with pytest.raises(ConfigError, match="window"):
        StateMachine(WindowConfig(size_ms=5_000)).restore(image)
    with pytest.raises(DecodeError):
        StateMachine(TUMBLING).restore(image[:-3])
    with pytest.raises(DecodeError):
        StateMachine(TUMBLING).restore(encode_command(Command("c", 1, "k", "counter", "add", 1)))


def test_integers_beyond_the_codec_are_refused_not_fatal() -> None:
    machine = StateMachine(WindowConfig(size_ms=1_000, allowed_lateness_ms=0))
    with pytest.raises(ValueError, match="2\\*\\*63"):
        Command("c", 1, "k", "counter", "add", 2**64, 0)
    big = (1 << 63) - 1
    first = machine.apply(encode_command(Command("c", 1, "k", "counter", "add", big, 0)))
    assert first.ok
    second = machine.apply(encode_command(Command("c", 2, "k", "counter", "add", big, 0)))
    assert not second.ok
    assert "overflow" in second.error
    machine.snapshot()  # still encodes: the overflowing add changed nothing
    assert machine.value("k", 0) == big


# -- idempotency keys: the replicated table --


def keyed(
    client_id: str,
    sequence: int,
    value: int,
    *,
    key: str = "order-17",
    timestamp_ms: int = 1_000,
    limit: int | None = None,
) -> bytes:
    operation = "add" if limit is None else "conditional_add"
    digest = request_digest("hits", "counter", operation, value, limit, timestamp_ms)
    command = Command(
        client_id, sequence, "hits", "counter", operation, value, timestamp_ms, limit, key, digest
    )
    return encode_command(command)


def test_a_key_retried_from_other_sessions_is_applied_once_with_the_first_result() -> None:
    machine = StateMachine(TUMBLING)
    first = machine.apply(keyed("node-a/1", 1, 5))
    # The same request retried at two other nodes (their own sessions and sequences).
    assert machine.apply(keyed("node-b/7", 3, 5)) == first
    assert machine.apply(keyed("node-c/2", 9, 5)) == first
    assert first == Result(ok=True, applied=True, value=5)
    assert newest_value(machine, "hits") == 5
    assert machine.idempotency_keys() == 1


def test_a_conditional_add_retried_elsewhere_keeps_its_first_answer() -> None:
    machine = StateMachine(TUMBLING)
    refused = machine.apply(keyed("a", 1, 5, limit=3))
    assert refused.ok
    assert not refused.applied
    machine.apply(keyed("a", 2, 1, key="other"))
    # Retried after the window changed: still the first answer, still not applied.
    assert machine.apply(keyed("b", 1, 5, limit=3)) == refused
    assert newest_value(machine, "hits") == 1


def test_a_key_reused_for_another_request_is_refused_and_changes_nothing() -> None:
    machine = StateMachine(TUMBLING)
    machine.apply(keyed("a", 1, 5))
    other = machine.apply(keyed("b", 1, 6))
    assert not other.ok
    assert "used for another request" in other.error
    assert newest_value(machine, "hits") == 5
    assert machine.rejected_commands == 1


def test_keys_expire_by_the_replicated_clock_and_the_table_is_bounded() -> None:
    machine = StateMachine(TUMBLING, idempotency_ttl_ms=10_000, idempotency_keys_max=3)
    machine.apply(keyed("a", 1, 1, key="k1", timestamp_ms=1_000))
    second = machine.apply(keyed("a", 2, 1, key="k2", timestamp_ms=5_000))
    assert machine.idempotency_keys() == 2
    # The clock (newest event time applied) moves to 11_000: k1, registered at 1_000, expires.
    machine.apply(keyed("a", 3, 1, key="k3", timestamp_ms=11_000))
    assert machine.idempotency_keys() == 2
    assert machine.apply(keyed("b", 1, 1, key="k1", timestamp_ms=11_000)).applied  # new again
    assert machine.apply(keyed("b", 2, 1, key="k2", timestamp_ms=5_000)) == second  # kept
    for number in range(4, 8):
        machine.apply(keyed("a", number, 1, key=f"k{number}", timestamp_ms=11_000))
    assert machine.idempotency_keys() == 3  # the oldest registrations went first


def test_the_table_survives_a_snapshot_and_restore() -> None:
    machine = StateMachine(TUMBLING)
    first = machine.apply(keyed("a", 1, 5))
    restored = StateMachine(TUMBLING)
    restored.restore(machine.snapshot())
    assert restored.apply(keyed("b", 1, 5)) == first
    assert not restored.apply(keyed("c", 1, 6)).ok
    assert newest_value(restored, "hits") == 5
    assert restored.snapshot() != StateMachine(TUMBLING).snapshot()


def test_commands_without_a_key_keep_the_old_eight_field_frame() -> None:
    plain = Command("a", 1, "hits", "counter", "add", 1, 0)
    assert decode_command(encode_command(plain)) == plain
    with_key = decode_command(keyed("a", 1, 5))
    assert with_key.idempotency_key == "order-17"
    assert with_key.request_digest == request_digest("hits", "counter", "add", 5, None, 1_000)
    assert request_digest("hits", "counter", "add", 5, None, None) != with_key.request_digest
    with pytest.raises(ValueError, match="digest"):
        Command("a", 1, "hits", "counter", "add", 1, 0, None, "key-without-digest")


# -- claims: who applies a quorum write's idempotency key --


def claim_command(
    client_id: str, sequence: int, operation: str, value: str, digest: str = "d1"
) -> bytes:
    command = Command(
        client_id, sequence, "orders.eu", "counter", operation, value, 2_000, None, "req-9", digest
    )
    return encode_command(command)


def test_the_first_claim_holds_the_key_and_later_claims_learn_who_holds_it() -> None:
    machine = StateMachine(TUMBLING)
    assert machine.apply(claim_command("a", 1, "claim", "node-a")) == Result(
        ok=True, applied=True, value=["claimed", "node-a"]
    )
    # A retry at node b: not the holder; told who is applying it.
    assert machine.apply(claim_command("b", 1, "claim", "node-b")) == Result(
        ok=True, applied=False, value=["claimed", "node-a"]
    )
    # Only the holder settles it; the answer to every later claim is the first result.
    assert not machine.apply(claim_command("b", 2, "settle", "done 1 node-b")).applied
    assert machine.apply(claim_command("a", 2, "settle", "done 1 node-a")).applied
    assert machine.apply(claim_command("c", 1, "claim", "node-c")) == Result(
        ok=True, applied=False, value=["done", "node-a", 1]
    )
    assert not machine.apply(claim_command("a", 3, "settle", "released node-a")).applied
    assert machine.read("orders.eu") is None  # claims touch no key
    assert machine.rejected_commands == 0


def test_a_released_claim_is_taken_by_the_next_claimer() -> None:
    machine = StateMachine(TUMBLING)
    machine.apply(claim_command("a", 1, "claim", "node-a"))
    assert machine.apply(claim_command("a", 2, "settle", "released node-a")).applied
    assert machine.apply(claim_command("b", 1, "claim", "node-b")) == Result(
        ok=True, applied=True, value=["claimed", "node-b"]
    )


def test_a_claim_for_another_request_or_a_strong_writes_key_is_refused() -> None:
    machine = StateMachine(TUMBLING)
    machine.apply(claim_command("a", 1, "claim", "node-a"))
    other = machine.apply(claim_command("b", 1, "claim", "node-b", digest="d2"))
    assert not other.ok
    assert "used for another request" in other.error
    # A key a strong write registered, claimed with that write's very digest: still refused.
    machine.apply(keyed("a", 2, 5, key="req-9-strong"))
    digest = request_digest("hits", "counter", "add", 5, None, 1_000)
    claim = Command(
        "c", 1, "hits", "counter", "claim", "node-c", 2_000, None, "req-9-strong", digest
    )
    assert not machine.apply(encode_command(claim)).ok
    assert newest_value(machine, "hits") == 5
    assert machine.rejected_commands == 2


def test_a_malformed_settle_is_rejected_and_claims_survive_a_snapshot() -> None:
    machine = StateMachine(TUMBLING)
    machine.apply(claim_command("a", 1, "claim", "node-a"))
    bad = machine.apply(claim_command("a", 2, "settle", "done many node-a"))
    assert not bad.ok
    restored = StateMachine(TUMBLING)
    restored.restore(machine.snapshot())
    assert restored.claims_held_by("node-a") == [("req-9", "d1")]
    assert restored.apply(claim_command("b", 1, "claim", "node-b")).value == ["claimed", "node-a"]


def test_a_holder_finds_the_claims_it_has_not_settled() -> None:
    machine = StateMachine(TUMBLING, idempotency_keys_max=2)
    machine.apply(claim_command("a", 1, "claim", "node-a"))
    assert machine.claims_held_by("node-a") == [("req-9", "d1")]
    assert machine.claims_held_by("node-b") == []
    machine.apply(claim_command("a", 2, "settle", "released node-a"))
    assert machine.claims_held_by("node-a") == []
    machine.apply(claim_command("b", 1, "claim", "node-b"))
    assert machine.claims_held_by("node-b") == [("req-9", "d1")]
    machine.apply(keyed("c", 1, 1, key="k1"))
    machine.apply(keyed("c", 2, 1, key="k2"))  # the table is full: the claim is forgotten
    assert machine.claims_held_by("node-b") == []


def test_the_claims_a_replica_holds_are_answered_through_the_log() -> None:
    machine = StateMachine(TUMBLING)
    machine.apply(claim_command("a", 1, "claim", "node-a"))
    other = Command("b", 1, "orders.us", "counter", "claim", "node-b", 2_000, None, "req-2", "d2")
    machine.apply(encode_command(other))

    def held(sequence: int, replica: str) -> Result:
        query = Command("q", sequence, "__crdtstream.claims", "counter", CLAIMS_HELD, replica)
        return machine.apply(encode_command(query))

    assert held(1, "node-a") == Result(ok=True, value=[["req-9", "d1"]])
    assert held(2, "node-b") == Result(ok=True, value=[["req-2", "d2"]])
    machine.apply(claim_command("a", 2, "settle", "done 1 node-a"))
    assert held(3, "node-a") == Result(ok=True, value=[])
    assert machine.read("__crdtstream.claims") is None  # a query touches no key
    with pytest.raises(ValueError, match="no idempotency key"):
        Command("q", 4, "k", "counter", CLAIMS_HELD, "node-a", 0, None, "req-9", "d1")
