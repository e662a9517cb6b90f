"""The linearizability checker on hand-written and generated histories, and against brute force."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.checkers.linearizability import (
    CounterModel,
    HistoryRecorder,
    Operation,
    Verdict,
    check_history,
    check_operations,
)

MODEL = CounterModel()


def add(client: int, start: float, end: float | None, amount: int, key: str = "k") -> Operation:
    return Operation(client, key, "add", start, end, amount=amount)


def conditional(
    client: int, start: float, end: float | None, amount: int, limit: int, applied: bool | None
) -> Operation:
    return Operation(client, "k", "conditional_add", start, end, amount, limit, applied)


def read(
    client: int, start: float, end: float | None, value: int | None, key: str = "k"
) -> Operation:
    return Operation(client, key, "read", start, end, result=value)


def verdict_of(operations: list[Operation]) -> Verdict:
    return check_operations("k", operations, MODEL).verdict


def brute_force_linearizable(operations: list[Operation]) -> bool:
    """The definition, by exhaustive search over orders that respect real time."""

    def search(remaining: frozenset[int], state: int) -> bool:
        if not remaining:
            return True
        for index in remaining:
            candidate = operations[index]
            must_wait = any(
                operations[other].end_time < candidate.invoke_time
                for other in remaining
                if other != index
            )
            if must_wait:
                continue
            legal, next_state = MODEL.step(state, candidate)
            if legal and search(remaining - {index}, next_state):
                return True
        return False

    return search(frozenset(range(len(operations))), MODEL.initial_state())


# Hand-written histories.


def test_sequential_history_is_linearizable() -> None:
    history = [add(1, 0, 1, 2), read(1, 2, 3, 2), add(2, 4, 5, 3), read(2, 6, 7, 5)]
    result = check_operations("k", history, MODEL)
    assert result.verdict is Verdict.LINEARIZABLE
    assert [operation.kind for operation in result.order] == ["add", "read", "add", "read"]


def test_empty_history_is_linearizable() -> None:
    assert verdict_of([]) is Verdict.LINEARIZABLE


@pytest.mark.parametrize("seen", [0, 1])
def test_read_concurrent_with_add_may_see_it_or_not(seen: int) -> None:
    assert verdict_of([add(1, 0, 10, 1), read(2, 2, 5, seen)]) is Verdict.LINEARIZABLE


def test_stale_read_after_acknowledged_add_is_illegal() -> None:
    history = [add(1, 0, 2, 1), read(2, 3, 4, 0)]
    result = check_operations("k", history, MODEL)
    assert result.verdict is Verdict.ILLEGAL, result.explain()
    assert "read" in result.explain()


def test_stale_read_from_a_deposed_leader_is_illegal() -> None:
    """A read sees an old value after another read already saw a newer one."""
    history = [add(1, 0, 10, 5), read(2, 1, 3, 5), read(3, 4, 6, 0)]
    assert verdict_of(history) is Verdict.ILLEGAL


def test_read_of_an_impossible_value_is_illegal() -> None:
    assert verdict_of([add(1, 0, 5, 1), add(2, 0, 5, 2), read(3, 0, 5, 4)]) is Verdict.ILLEGAL


def test_reads_observing_two_concurrent_adds_in_contradicting_orders_are_illegal() -> None:
    history = [add(1, 0, 10, 1), add(2, 0, 10, 2), read(3, 1, 2, 1), read(4, 3, 4, 2)]
    assert verdict_of(history) is Verdict.ILLEGAL


def test_touching_intervals_are_concurrent() -> None:
    """Intervals are closed: an add ending at 20 overlaps a read starting at 20."""
    assert verdict_of([add(1, 10, 20, 1), read(2, 20, 30, 0)]) is Verdict.LINEARIZABLE
    assert verdict_of([add(1, 10, 20, 1), read(2, 21, 30, 0)]) is Verdict.ILLEGAL


@pytest.mark.parametrize("seen", [0, 7])
def test_timed_out_add_may_or_may_not_take_effect(seen: int) -> None:
    assert verdict_of([add(1, 0, None, 7), read(2, 5, 6, seen)]) is Verdict.LINEARIZABLE


def test_timed_out_add_cannot_be_undone() -> None:
    history = [add(1, 0, None, 7), read(2, 5, 6, 7), read(3, 8, 9, 0)]
    assert verdict_of(history) is Verdict.ILLEGAL


def test_timed_out_add_cannot_take_effect_before_its_invocation() -> None:
    assert verdict_of([read(2, 0, 1, 7), add(1, 5, None, 7)]) is Verdict.ILLEGAL


def test_timed_out_add_may_take_effect_after_later_operations() -> None:
    history = [add(1, 0, None, 7), read(2, 5, 6, 0), add(3, 7, 8, 1), read(4, 9, 10, 8)]
    assert verdict_of(history) is Verdict.LINEARIZABLE


def test_conditional_add_respects_its_limit() -> None:
    history = [conditional(1, 0, 1, 3, 5, True), conditional(2, 2, 3, 3, 5, False)]
    assert verdict_of(history) is Verdict.LINEARIZABLE
    history = [conditional(1, 0, 1, 3, 5, True), conditional(2, 2, 3, 3, 5, True)]
    assert verdict_of(history) is Verdict.ILLEGAL


def test_two_concurrent_conditional_adds_cannot_both_apply_past_the_limit() -> None:
    history = [conditional(1, 0, 10, 4, 5, True), conditional(2, 0, 10, 4, 5, True)]
    assert verdict_of(history) is Verdict.ILLEGAL
    history = [conditional(1, 0, 10, 4, 5, True), conditional(2, 0, 10, 4, 5, False)]
    assert verdict_of(history) is Verdict.LINEARIZABLE


def test_refused_conditional_add_needs_a_reason() -> None:
    """Refusing is legal only when some order makes the sum exceed the limit."""
    assert verdict_of([conditional(1, 0, 1, 3, 5, False)]) is Verdict.ILLEGAL
    history = [add(2, 0, None, 4), conditional(1, 1, 2, 3, 5, False), read(3, 3, 4, 4)]
    assert verdict_of(history) is Verdict.LINEARIZABLE


def test_timed_out_conditional_add_follows_the_state() -> None:
    history = [conditional(1, 0, None, 3, 5, None), read(2, 1, 2, 3), read(3, 3, 4, 3)]
    assert verdict_of(history) is Verdict.LINEARIZABLE
    history = [add(2, 0, 1, 4), conditional(1, 2, None, 3, 5, None), read(3, 3, 4, 7)]
    assert verdict_of(history) is Verdict.ILLEGAL


def test_history_is_partitioned_by_key() -> None:
    history = [
        add(1, 0, 1, 1, key="a"),
        read(2, 2, 3, 1, key="a"),
        add(1, 0, 1, 1, key="b"),
        read(2, 2, 3, 0, key="b"),
    ]
    verdicts = {result.key: result.verdict for result in check_history(history)}
    assert verdicts == {"a": Verdict.LINEARIZABLE, "b": Verdict.ILLEGAL}


def test_search_budget_gives_unknown() -> None:
    history = [add(client, 0, 100, 1) for client in range(12)] + [read(99, 101, 102, 11)]
    assert check_operations("k", history, MODEL, max_states=5).verdict is Verdict.UNKNOWN


def test_recorder_turns_open_operations_into_timeouts_and_drops_failures() -> None:
    recorder = HistoryRecorder()
    done = recorder.invoke(add(1, 0, None, 2))
    recorder.complete(done, 3, None)
    recorder.fail(recorder.invoke(add(2, 1, None, 100)))
    recorder.invoke(add(3, 2, None, 5))
    history = recorder.history()
    assert sorted((op.amount, op.complete_time) for op in history) == [(2, 3), (5, None)]
    assert verdict_of([*history, read(4, 4, 5, 7)]) is Verdict.LINEARIZABLE
    assert verdict_of([*history, read(4, 4, 5, 102)]) is Verdict.ILLEGAL


# Generated histories.


def generate_linearizable(rng: random.Random, clients: int, operations: int) -> list[Operation]:
    """Clients with random overlapping intervals; each takes effect at a point inside its own."""
    events: list[tuple[float, int, float, float | None, str, int, int | None]] = []
    for client in range(clients):
        time = rng.random()
        for _ in range(operations // clients):
            start = time + rng.random() * 3
            point = start + rng.random() * 3
            timed_out = rng.random() < 0.1
            end = None if timed_out else point + rng.random() * 3
            kind = rng.choice(["add", "add", "read", "read", "conditional_add"])
            amount = rng.randint(1, 5) if kind != "read" else 0
            limit = rng.randint(0, 30) if kind == "conditional_add" else None
            events.append((point, client, start, end, kind, amount, limit))
            if timed_out:
                break
            assert end is not None
            time = end
    state = 0
    history: list[Operation] = []
    for _point, client, start, end, kind, amount, limit in sorted(events):
        operation = Operation(client, "k", kind, start, end, amount, limit)
        legal, state_after = MODEL.step(state, operation)
        assert legal
        result: int | bool | None = None
        if kind == "read":
            result = state
        elif kind == "conditional_add":
            result = state_after != state
        state = state_after
        history.append(Operation(client, "k", kind, start, end, amount, limit, result))
    rng.shuffle(history)
    return history


@given(seed=st.integers(0, 2**32 - 1), clients=st.integers(1, 6))
def test_generated_linearizable_histories_pass(seed: int, clients: int) -> None:
    history = generate_linearizable(random.Random(seed), clients, 36)
    result = check_operations("k", history, MODEL)
    assert result.verdict is Verdict.LINEARIZABLE, f"seed={seed}: {result.explain()}"


@given(seed=st.integers(0, 2**32 - 1), clients=st.integers(2, 5))
def test_a_stale_final_read_is_always_caught(seed: int, clients: int) -> None:
    rng = random.Random(seed)
    history = [op for op in generate_linearizable(rng, clients, 24) if op.kind == "add"]
    history = [op for op in history if op.complete_time is not None]
    total = sum(op.amount for op in history)
    last = max((op.end_time for op in history), default=0.0)
    stale = read(99, last + 1, last + 2, total - rng.randint(1, 5))
    result = check_operations("k", [*history, stale], MODEL)
    assert result.verdict is Verdict.ILLEGAL, f"seed={seed}: {result.explain()}"


def generate_arbitrary(rng: random.Random, size: int) -> list[Operation]:
    """Small histories that may or may not be linearizable, for the brute-force comparison."""
    history = []
    for index in range(size):
        start = float(rng.randint(0, 8))
        end = None if rng.random() < 0.15 else start + rng.randint(0, 4)
        kind = rng.choice(["add", "read", "conditional_add"])
        if kind == "read":
            value = None if end is None else rng.randint(0, 6)
            history.append(read(index, start, end, value))
        elif kind == "add":
            history.append(add(index, start, end, rng.randint(1, 3)))
        else:
            applied = None if end is None else rng.random() < 0.5
            history.append(conditional(index, start, end, rng.randint(1, 3), 4, applied))
    return history


@given(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 7))
def test_checker_agrees_with_brute_force(seed: int, size: int) -> None:
    history = generate_arbitrary(random.Random(seed), size)
    expected = Verdict.LINEARIZABLE if brute_force_linearizable(history) else Verdict.ILLEGAL
    result = check_operations("k", history, MODEL)
    assert result.verdict is expected, f"seed={seed}: {result.explain()}"


def test_brute_force_comparison_covers_both_verdicts() -> None:
    """The comparison above is only meaningful if both verdicts occur often."""
    verdicts = [
        brute_force_linearizable(generate_arbitrary(random.Random(seed), 5)) for seed in range(200)
    ]
    assert 20 < sum(verdicts) < 180


def test_long_histories_over_many_keys_are_checked_quickly() -> None:
    """Partitioning by key keeps each search small (P-compositionality)."""
    rng = random.Random(2024)
    history = []
    for key in ("a", "b", "c", "d"):
        part = generate_linearizable(rng, 5, 100)
        history += [replace(operation, key=key) for operation in part]
    verdicts = check_history(history)
    assert [verdict.key for verdict in verdicts] == ["a", "b", "c", "d"]
    assert all(verdict.verdict is Verdict.LINEARIZABLE for verdict in verdicts)
    assert sum(len(verdict.order) for verdict in verdicts) == len(history)


def test_an_operation_completing_before_its_invocation_is_refused() -> None:
    with pytest.raises(ValueError, match="before it was invoked"):
        check_operations("k", [add(1, 5, 4, 1)], MODEL)
