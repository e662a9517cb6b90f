"""The bounded counter's safety: no interleaving of merges lets the replicas spend more than was
granted, and stale, duplicated or reordered transfers never create rights."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtstream import wire
from crdtstream.crdt import BoundedCounter
from crdtstream.errors import DecodeError, RefusedError

REPLICAS = ("r0", "r1", "r2", "r3")
LIMIT = 25


def _allocated() -> dict[str, BoundedCounter]:
    """Each replica granted its share of LIMIT, known only to itself at first."""
    states = {name: BoundedCounter(name) for name in REPLICAS}
    for index, name in enumerate(REPLICAS):
        states[name].grant(LIMIT // len(REPLICAS) + (index < LIMIT % len(REPLICAS)))
    return states


@settings(max_examples=200)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["consume", "transfer", "merge", "merge_stale", "deliver"]),
            st.sampled_from(REPLICAS),
            st.sampled_from(REPLICAS),
            st.integers(min_value=1, max_value=9),
        ),
        max_size=80,
    )
)
def test_no_interleaving_of_merges_spends_more_than_was_granted(
    steps: list[tuple[str, str, str, int]],
) -> None:
    states = _allocated()
    history: list[BoundedCounter] = [state.copy() for state in states.values()]
    deltas: list[BoundedCounter] = []
    for action, replica, other, n in steps:
        state = states[replica]
        try:
            if action == "consume":
                deltas.append(state.consume(n))
            elif action == "transfer" and other != replica:
                deltas.append(state.transfer(n, other))
        except RefusedError:
            pass
        if action == "merge":
            state.merge(states[other].copy())
        elif action == "merge_stale" and history:
            state.merge(history[n % len(history)])  # an old copy, arriving late
        elif action == "deliver" and deltas:
            state.merge(deltas[(n * 7) % len(deltas)])  # any delta, again and out of order
        history.append(state.copy())
        assert state.rights(replica) >= 0
    everything = BoundedCounter("observer")
    for state in [*states.values(), *history, *deltas]:
        everything.merge(state)
    assert everything.granted == LIMIT
    assert everything.value <= LIMIT
    assert sum(everything.all_rights().values()) == LIMIT - everything.value
    assert all(n >= 0 for n in everything.all_rights().values())


def test_a_refused_spend_or_transfer_changes_nothing() -> None:
    counter = BoundedCounter("a")
    counter.grant(3)
    before = counter.to_bytes()
    with pytest.raises(RefusedError, match="no_rights"):
        counter.consume(4)
    with pytest.raises(RefusedError, match="no_rights"):
        counter.transfer(4, "b")
    assert counter.to_bytes() == before
    assert counter.rights("a") == 3


def test_a_transfer_delivered_twice_or_after_a_newer_one_counts_once() -> None:
    donor, receiver = BoundedCounter("a"), BoundedCounter("b")
    donor.grant(10)
    first = donor.transfer(3, "b")
    second = donor.transfer(2, "b")
    for delta in (second, first, first, second):
        receiver.merge(delta)
    assert receiver.rights("b") == 5
    receiver.consume(5)
    with pytest.raises(RefusedError):
        receiver.consume(1)


def test_a_transfer_to_itself_and_negative_amounts_are_refused() -> None:
    counter = BoundedCounter("a")
    counter.grant(3)
    with pytest.raises(ValueError, match="to itself"):
        counter.transfer(1, "a")
    with pytest.raises(ValueError, match=">= 0"):
        counter.consume(-1)
    with pytest.raises(ValueError, match=">= 0"):
        counter.grant(-1)


def test_a_transfer_row_from_a_replica_to_itself_is_malformed() -> None:
    frame = wire.encode(wire.Tag.BOUNDED_COUNTER, ["a", [{}, {}, {"a": {"a": 3}}]])
    with pytest.raises(DecodeError):
        BoundedCounter.from_bytes(frame)
