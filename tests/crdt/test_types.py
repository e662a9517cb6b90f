"""Type-specific behaviour that the shared law suite does not pin down."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crdtstream import wire
from crdtstream.crdt import (
    Distribution,
    GCounter,
    GSet,
    HyperLogLog,
    LWWRegister,
    MaxRegister,
    MinRegister,
    ORSet,
    PNCounter,
)
from crdtstream.errors import DecodeError, MergeError


def test_gcounter_refuses_negative_and_non_int_increments() -> None:
    counter = GCounter("a")
    with pytest.raises(ValueError, match="n >= 0"):
        counter.add(-1)
    with pytest.raises(TypeError):
        counter.add(1.5)  # type: ignore[arg-type]
    assert counter.value == 0


def test_counters_sum_replicas_and_ignore_duplicate_deltas() -> None:
    a, b = PNCounter("a"), PNCounter("b")
    delta = a.add(10)
    a.add(-3)
    b.add(5)
    b.merge(delta)
    b.merge(delta)
    b.merge(a)
    assert b.value == 12
    assert a.add(0) == PNCounter("a")


def test_sets_support_membership_and_length() -> None:
    gset, orset = GSet("a"), ORSet("a")
    items: list[str | bytes | int] = ["x", b"y", 3]
    for item in items:
        gset.add(item)
        orset.add(item)
    assert "x" in gset
    assert b"y" in orset
    assert 3 in orset
    assert len(gset) == len(orset) == 3
    assert gset.value == orset.value == frozenset({"x", b"y", 3})


@pytest.mark.parametrize("item", [1.5, None, True, ("t",), 2**64])
def test_sets_refuse_items_the_codec_cannot_carry_unchanged(item: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        ORSet("a").add(item)  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError)):
        GSet("a").add(item)  # type: ignore[arg-type]


def test_orset_concurrent_add_wins_over_remove() -> None:
    a, b = ORSet("a"), ORSet("b")
    b.merge(a.add("x"))
    removal = b.remove("x")
    concurrent_add = a.add("x")
    a.merge(removal)
    b.merge(concurrent_add)
    assert "x" in a
    assert "x" in b
    assert a == b


def test_orset_observed_remove_removes_everywhere() -> None:
    a, b = ORSet("a"), ORSet("b")
    b.merge(a.add("x"))
    a.merge(b.remove("x"))
    assert "x" not in a
    assert a.value == b.value == frozenset()


def test_orset_keeps_no_tombstones_after_churn() -> None:
    """Many add/remove cycles leave a context of one counter per replica and no dot cloud."""
    a, b = ORSet("a"), ORSet("b")
    deltas = []
    for round_number in range(200):
        deltas.append(a.add(f"item-{round_number % 7}"))
        deltas.append(a.remove(f"item-{(round_number * 3) % 7}"))
    for delta in reversed(deltas):
        b.merge(delta)
    assert b == a
    assert b._context.cloud == set()
    assert b._context.versions == {"a": 200}
    assert len(b._entries) == len(a.value) <= 7


def test_lww_later_timestamp_wins_and_ties_go_to_the_larger_replica() -> None:
    a, b = LWWRegister("a"), LWWRegister("b")
    a_write = a.set("from-a", timestamp_ms=5)
    b_write = b.set("from-b", timestamp_ms=5)
    a.merge(b_write)
    b.merge(a_write)
    assert a.value == b.value == "from-b"
    a.set("newer", timestamp_ms=6)
    b.merge(a)
    assert b.value == "newer"
    assert b.timestamp_ms == 6


def test_lww_same_replica_same_millisecond_later_write_wins_and_older_write_loses() -> None:
    register = LWWRegister("a")
    register.set("first", timestamp_ms=5)
    second = register.set("second", timestamp_ms=5)
    register.set("stale", timestamp_ms=4)
    assert register.value == "second"
    other = LWWRegister("z")
    other.merge(second)
    assert other.value == "second"


def test_lww_refuses_values_the_codec_cannot_carry() -> None:
    with pytest.raises(TypeError):
        LWWRegister("a").set(object(), timestamp_ms=1)


def test_extremum_registers_start_empty_and_refuse_nan() -> None:
    high, low = MaxRegister("a"), MinRegister("a")
    assert (high.value, low.value) == (None, None)
    for x in [3.0, -1.0, 7.5]:
        high.observe(x)
        low.observe(x)
    assert (high.value, low.value) == (7.5, -1.0)
    with pytest.raises(ValueError, match="NaN"):
        high.observe(math.nan)


def test_mismatched_parameters_and_types_raise_merge_error() -> None:
    with pytest.raises(MergeError, match="precision"):
        HyperLogLog("a", precision=10).merge(HyperLogLog("b", precision=12))
    with pytest.raises(MergeError, match="relative_accuracy"):
        Distribution("a", 0.01).merge(Distribution("b", 0.02))
    with pytest.raises(MergeError, match="GCounter"):
        PNCounter("a").merge(GCounter("b"))  # type: ignore[arg-type]


def test_constructor_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="precision"):
        HyperLogLog("a", precision=3)
    with pytest.raises(ValueError, match="relative_accuracy"):
        Distribution("a", relative_accuracy=0.9)
    with pytest.raises(ValueError, match="non-empty"):
        GCounter("")


def test_hyperloglog_add_and_add_many_agree() -> None:
    items = ["a", "b", "é", "a"] + [f"k{n}" for n in range(500)]
    one, many = HyperLogLog("a", 12), HyperLogLog("a", 12)
    for item in items:
        one.add(item)
    many.add_many(items)
    assert one == many
    numbers = np.arange(-50, 50)
    one_numbers, many_numbers = HyperLogLog("a", 12), HyperLogLog("a", 12)
    for number in numbers.tolist():
        one_numbers.add(number)
    many_numbers.add_many(numbers)
    assert one_numbers == many_numbers


def test_hyperloglog_delta_holds_only_raised_registers() -> None:
    sketch = HyperLogLog("a", 14)
    first = sketch.add("x")
    assert np.count_nonzero(first.registers) == 1
    assert np.count_nonzero(sketch.add("x").registers) == 0
    assert len(first.to_bytes()) < 100


def test_distribution_refuses_non_finite_values_and_applies_nothing() -> None:
    distribution = Distribution("a")
    distribution.add(1.0)
    with pytest.raises(ValueError, match="finite"):
        distribution.add_many([2.0, math.nan])
    with pytest.raises(ValueError, match="finite"):
        distribution.add(math.inf)
    with pytest.raises(ValueError, match="count"):
        distribution.add(1.0, count=0)
    assert distribution.count == 1


def test_distribution_empty_reads_and_quantile_range() -> None:
    distribution = Distribution("a")
    assert distribution.quantile(0.5) is None
    assert (distribution.count, distribution.sum, distribution.min, distribution.max) == (
        0,
        0.0,
        None,
        None,
    )
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        distribution.quantile(1.5)


def test_distribution_negative_and_zero_values_keep_their_order() -> None:
    distribution = Distribution("a", 0.01)
    distribution.add_many([-100.0, -1.0, 0.0, 0.0, 1.0, 100.0])
    assert distribution.quantile(0.0) == -100.0
    assert distribution.quantile(0.5) == 0.0
    assert distribution.quantile(1.0) == 100.0
    assert abs(distribution.quantile(0.2) + 1.0) <= 0.01  # type: ignore[operator]
    assert distribution.sum == 0.0


def test_lww_register_refuses_values_that_do_not_compare_plainly() -> None:
    register = LWWRegister("a")
    with pytest.raises(TypeError):
        register.set(np.array([1, 2]), 5)
    with pytest.raises(TypeError):
        register.set({1: "non-string key"}, 5)
    frame = wire.encode(wire.Tag.LWW_REGISTER, ["a", [5, "a", 0, [np.array([], dtype=np.uint8)]]])
    with pytest.raises(DecodeError):
        LWWRegister.from_bytes(frame)
