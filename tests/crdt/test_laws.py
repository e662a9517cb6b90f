"""The shared law suite: every CRDT type is a join-semilattice with correct deltas and codec.

Each type joins by a :class:`~tests.crdt.specs.TypeSpec` (a strategy of operations).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtstream.crdt import Crdt
from tests.crdt.specs import SPECS, TypeSpec

settings_for_laws = settings(max_examples=40)


def replica_from(spec: TypeSpec, replica: str, operations: list[Any]) -> tuple[Crdt, list[Crdt]]:
    """A replica after ``operations``, and the deltas they returned."""
    state = spec.build(replica)
    deltas = [spec.apply(state, operation) for operation in operations]
    return state, deltas


def merged(first: Crdt, *others: Crdt) -> Crdt:
    result = first.copy()
    for other in others:
        result.merge(other)
    return result


def draw_replica(data: st.DataObject, spec: TypeSpec, replica: str) -> Crdt:
    operations = data.draw(st.lists(spec.operations, max_size=8), label=f"ops {replica}")
    return replica_from(spec, replica, operations)[0]


parametrize_specs = pytest.mark.parametrize("spec", SPECS, ids=str)


@parametrize_specs
@settings_for_laws
@given(data=st.data())
def test_merge_is_commutative(spec: TypeSpec, data: st.DataObject) -> None:
    a, b = draw_replica(data, spec, "a"), draw_replica(data, spec, "b")
    assert merged(a, b) == merged(b, a)


@parametrize_specs
@settings_for_laws
@given(data=st.data())
def test_merge_is_associative(spec: TypeSpec, data: st.DataObject) -> None:
    a, b, c = (draw_replica(data, spec, name) for name in "abc")
    assert merged(merged(a, b), c) == merged(a, merged(b, c))


@parametrize_specs
@settings_for_laws
@given(data=st.data())
def test_merge_is_idempotent(spec: TypeSpec, data: st.DataObject) -> None:
    a, b = draw_replica(data, spec, "a"), draw_replica(data, spec, "b")
    assert merged(a, a) == a
    joined = merged(a, b)
    assert merged(joined, a) == joined
    assert merged(joined, joined) == joined


@parametrize_specs
@settings_for_laws
@given(data=st.data())
def test_merging_the_empty_state_changes_nothing(spec: TypeSpec, data: st.DataObject) -> None:
    a = draw_replica(data, spec, "a")
    empty = spec.build("e")
    assert merged(a, empty) == a
    assert merged(empty, a) == a
    assert spec.observe(merged(empty, a)) == spec.observe(a)


@parametrize_specs
@settings_for_laws
@given(data=st.data())
def test_a_delta_merged_into_its_origin_changes_nothing(
    spec: TypeSpec, data: st.DataObject
) -> None:
    state = draw_replica(data, spec, "a")
    for operation in data.draw(st.lists(spec.operations, min_size=1, max_size=5)):
        delta = spec.apply(state, operation)
        assert merged(state, delta) == state


@parametrize_specs
@settings_for_laws
@given(data=st.data())
def test_any_order_and_duplication_of_deltas_gives_the_same_state(
    spec: TypeSpec, data: st.DataObject
) -> None:
    a, deltas_a = replica_from(spec, "a", data.draw(st.lists(spec.operations, max_size=8)))
    b, deltas_b = replica_from(spec, "b", data.draw(st.lists(spec.operations, max_size=8)))
    deliveries = deltas_a + deltas_b
    duplicates = data.draw(st.lists(st.sampled_from(deliveries), max_size=6)) if deliveries else []
    order = data.draw(st.permutations(deliveries + duplicates), label="delivery order")
    receiver = spec.build("c")
    for delta in order:
        receiver.merge(delta)
    assert receiver == merged(a, b)
    assert spec.observe(receiver) == spec.observe(merged(a, b))


@parametrize_specs
@settings_for_laws
@given(data=st.data())
def test_wire_round_trip_keeps_state_and_replica(spec: TypeSpec, data: st.DataObject) -> None:
    state, deltas = replica_from(spec, "a", data.draw(st.lists(spec.operations, max_size=8)))
    for original in [state, *deltas]:
        decoded = type(original).from_bytes(original.to_bytes())
        assert decoded == original
        assert decoded.replica == original.replica
        assert spec.observe(decoded) == spec.observe(original)


@parametrize_specs
@settings_for_laws
@given(data=st.data())
def test_equal_states_encode_to_identical_bytes(spec: TypeSpec, data: st.DataObject) -> None:
    a, b = draw_replica(data, spec, "a"), draw_replica(data, spec, "b")
    one, other = merged(a, b), merged(b, a)
    other.replica = one.replica
    assert one.to_bytes() == other.to_bytes()


@parametrize_specs
@settings_for_laws
@given(data=st.data())
def test_copy_is_independent(spec: TypeSpec, data: st.DataObject) -> None:
    state = draw_replica(data, spec, "a")
    before = state.to_bytes()
    duplicate = state.copy()
    assert duplicate == state
    for operation in data.draw(st.lists(spec.operations, min_size=1, max_size=5)):
        spec.apply(duplicate, operation)
    duplicate.merge(draw_replica(data, spec, "b"))
    assert state.to_bytes() == before
