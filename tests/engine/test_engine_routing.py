"""The engine alone, stepped by hand: every write and read is routed by the key's mode, and a
``strong`` key is written through Raft or refused, never applied to the eventual store."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtstream.config import PolicyRule, RaftConfig
from crdtstream.engine import OPERATIONS, Answer, Engine, EngineConfig, Ticket
from crdtstream.engine.strong import StrongReplica
from crdtstream.errors import InvalidValueError, KindConflictError, RefusedError
from crdtstream.window.store import WindowStore

START_MS = 1_700_000_000_000
STEP_MS = 10
POLICY = (PolicyRule("quota.*", "strong"), PolicyRule("orders.*", "quorum"))


def solo(
    voters: tuple[str, ...] = ("solo",), seed: int = 1, policy: tuple[PolicyRule, ...] = POLICY
) -> Engine:
    """One engine that is its own cluster (and, with ``voters``, its own Raft voter set)."""
    config = EngineConfig(
        node_id="solo",
        listen_address="memory://solo",
        raft=RaftConfig(tick_ms=STEP_MS),
        raft_voters=voters,
        policy=policy,
    )
    replica = "solo~0001"
    return Engine(
        config,
        replica,
        WindowStore(replica),
        random.Random(seed),
        now_ms=START_MS,
        monotonic_ms=0,
    )


def run_until_done(engine: Engine, ticket: Ticket, limit_ms: int = 5_000) -> Answer:
    elapsed = 0
    while not ticket.done and elapsed < limit_ms:
        elapsed += STEP_MS
        engine.tick(START_MS + elapsed, elapsed)
    return ticket.result()


def test_a_strong_write_goes_through_raft_and_never_into_the_eventual_store() -> None:
    engine = solo()
    answer = run_until_done(engine, engine.write("quota.calls", "add", 5))
    assert (answer.mode, answer.consistency, answer.applied, answer.value) == (
        "strong",
        "strong",
        True,
        5,
    )
    assert engine.store.kind_of("quota.calls") is None
    assert engine.catalog.kind_of("quota.calls") is None
    assert isinstance(engine.strong, StrongReplica)
    view = engine.strong.machine.read("quota.calls")
    assert view is not None
    assert [window[2] for window in view.windows] == [5]
    read = run_until_done(engine, engine.read("quota.calls"))
    assert [window.value for window in read.windows] == [5]


def test_a_strong_write_without_raft_voters_is_refused_with_its_reason() -> None:
    engine = solo(voters=())
    ticket = engine.write("quota.calls", "add", 5)
    assert ticket.done
    assert isinstance(ticket.error, RefusedError)
    assert "raft_voters" in ticket.error.reason
    assert engine.store.kind_of("quota.calls") is None
    assert engine.catalog.kind_of("quota.calls") is None  # so nothing about it is gossiped
    with pytest.raises(RefusedError):
        engine.read("quota.calls").result()


def test_statsd_lines_for_strong_keys_are_refused_and_counted() -> None:
    engine = solo()
    answer = engine.ingest_statsd(b"quota.calls:1|c\nhits:2|c\nquota.calls:4|c|#env:prod")
    assert (answer["accepted"], answer["strong_refused"]) == (1, 2)
    assert engine.counters.events_strong_refused == 2
    assert engine.store.kind_of("quota.calls") is None
    assert engine.store.kind_of("hits") == "counter"


def test_a_conditional_add_needs_a_strong_key() -> None:
    engine = solo()
    for key in ("hits", "orders.eu"):
        ticket = engine.write(key, "conditional_add", 1, limit=3)
        assert isinstance(ticket.error, RefusedError), key
        assert engine.store.kind_of(key) is None, key


def test_eventual_writes_complete_at_once_and_quorum_writes_of_one_node_confirm() -> None:
    engine = solo()
    eventual = engine.write("hits", "add", 2).result()
    assert (eventual.mode, eventual.accepted, eventual.applied) == ("eventual", 1, None)
    quorum = run_until_done(engine, engine.write("orders.eu", "insert", "o-1"))
    assert (quorum.kind, quorum.mode, quorum.accepted) == ("set", "quorum", 1)
    removed = run_until_done(engine, engine.write("orders.eu", "remove", "o-1"))
    assert removed.removed is True
    read = run_until_done(engine, engine.read("orders.eu"))
    assert (read.mode, read.consistency) == ("quorum", "quorum")


def test_a_read_may_be_weaker_than_the_mode_never_stronger() -> None:
    engine = solo()
    engine.write("hits", "add", 2).result()
    run_until_done(engine, engine.write("quota.calls", "add", 1))
    weak = engine.read("quota.calls", consistency="eventual").result()
    assert (weak.mode, weak.consistency, [w.value for w in weak.windows]) == (
        "strong",
        "eventual",
        [1],
    )
    assert isinstance(engine.read("hits", consistency="strong").error, RefusedError)
    assert isinstance(engine.read("quota.calls", consistency="quorum").error, RefusedError)
    assert isinstance(engine.read("hits", consistency="sometimes").error, InvalidValueError)
    unknown = engine.read("never.written").result()
    assert (unknown.kind, unknown.windows) == (None, ())


def test_bad_writes_fail_with_typed_errors_and_change_nothing() -> None:
    engine = solo()
    engine.write("latency", "observe", 12.5).result()
    version = engine.store.version
    failures = [
        (engine.write("latency", "add", 1), KindConflictError),
        (engine.write("x", "explode", 1), InvalidValueError),
        (engine.write("x", "add", "many"), InvalidValueError),
        (engine.write("x", "add", 1, timestamp_ms=START_MS + 10**9), InvalidValueError),
        (engine.write("x", "add", 1, limit=4), InvalidValueError),
        (engine.write("quota.y", "add", 2**70), InvalidValueError),
    ]
    for ticket, error_type in failures:
        assert isinstance(ticket.error, error_type), (ticket.error, error_type)
    assert engine.store.version == version


def test_an_idempotent_strong_retry_is_applied_once() -> None:
    engine = solo()
    first = run_until_done(engine, engine.write("quota.jobs", "add", 5, idempotency_key="j-1"))
    again = run_until_done(engine, engine.write("quota.jobs", "add", 5, idempotency_key="j-1"))
    assert first.value == again.value == 5
    # The replicated state machine refuses the key for another request, at any node.
    other = engine.write("quota.jobs", "add", 6, idempotency_key="j-1")
    with pytest.raises(RefusedError, match="another request"):
        run_until_done(engine, other)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=5,
)


@given(
    key=st.sampled_from(["hits", "orders.eu", "quota.calls", "latency", ""]),
    op=st.sampled_from([*OPERATIONS, "explode", ""]),
    value=json_values,
    kind=st.none() | st.sampled_from(["counter", "gauge", "set", "distinct", "max", "bogus"]),
    timestamp_ms=st.none() | st.integers(min_value=-(2**70), max_value=2**70) | json_values,
    limit=st.none() | json_values,
)
def test_any_write_completes_or_fails_with_a_typed_error(
    key: str,
    op: str,
    value: object,
    kind: str | None,
    timestamp_ms: object,
    limit: object,
) -> None:
    """Whatever a client sends (the HTTP body is JSON), the engine answers or names the fault;
    nothing else escapes, and the engine keeps serving."""
    engine = solo()
    ticket = engine.write(
        key,
        op,
        value,  # type: ignore[arg-type]
        kind=kind,
        timestamp_ms=timestamp_ms,  # type: ignore[arg-type]
        limit=limit,  # type: ignore[arg-type]
    )
    if ticket.done and ticket.error is not None:
        assert isinstance(ticket.error, (InvalidValueError, KindConflictError, RefusedError))
    assert engine.write("probe", "add", 1).result().accepted == 1


def test_an_idempotency_key_on_a_key_that_cannot_keep_it_is_refused() -> None:
    """An eventual write carrying an idempotency key is refused and applies nothing, never
    silently counted twice on retry; so is a quorum write where no claim can be made (no Raft
    voters) or trusted after a crash (no local log)."""
    for engine, key, reason in (
        (solo(), "hits", "strong and quorum keys"),
        (solo(), "orders.eu", "write-ahead log"),
        (solo(voters=()), "orders.eu", "raft_voters"),
    ):
        version = engine.store.version
        ticket = engine.write(key, "add", 1, idempotency_key="retry-1")
        assert isinstance(ticket.error, RefusedError), (key, ticket.error)
        assert reason in str(ticket.error)
        assert engine.store.version == version


def test_statsd_lines_for_bounded_and_reserved_keys_are_refused_and_counted() -> None:
    engine = solo(policy=(*POLICY, PolicyRule("bd.*", "bounded", limit=10, members=("solo",))))
    answer = engine.ingest_statsd(
        b"bd.calls:3|c\nhits:2|c\n__crdtstream.export_done:9|c\nbd.calls:1|c|#env:prod"
    )
    assert (answer["accepted"], answer["bounded_refused"], answer["reserved_refused"]) == (1, 2, 1)
    assert engine.counters.events_bounded_refused == 2
    assert engine.counters.events_reserved_refused == 1
    for key in ("bd.calls", "bd.calls#env:prod", "__crdtstream.export_done"):
        assert engine.store.kind_of(key) is None, key
    assert engine.store.kind_of("hits") == "counter"
