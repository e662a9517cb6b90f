"""Per-kind semantics that the CRDT agreement test does not reach: hopping reads, gauge
adjustments, sample-rate weights, conflicts in merges, eviction and finality flags."""

from __future__ import annotations

import numpy as np
import pytest

from crdtstream.config import WindowConfig
from crdtstream.crdt import Distribution
from crdtstream.errors import KindConflictError
from crdtstream.window import StoreDelta, WindowStore
from crdtstream.window.kinds.distribution import DistributionValue

HOPPING = WindowConfig(size_ms=1_000, slide_ms=250, allowed_lateness_ms=10_000)


def test_hopping_windows_merge_their_slices_and_events_are_written_once() -> None:
    store = WindowStore("n1~0001", HOPPING)
    store.add("hits", "counter", 1, 100)
    store.add("hits", "counter", 10, 600)
    store.add("peak", "max", 3, 100)
    store.add("peak", "max", 2, 600)
    by_start = {w.start_ms: w.value for w in store.read_key("hits")}
    assert by_start == {-750: 1.0, -500: 1.0, -250: 11.0, 0: 11.0, 250: 10.0, 500: 10.0}
    assert {w.start_ms: w.value for w in store.read_key("peak")}[250] == 2.0
    assert store.full_state().cell_count == 4, "one cell per event's slice, not per window"


def test_gauge_adjustment_applies_to_the_current_view_and_wins_locally() -> None:
    config = WindowConfig(size_ms=1_000, allowed_lateness_ms=10_000)
    here, there = WindowStore("a~0001", config), WindowStore("z~0001", config)
    there.add("depth", "gauge", 10.0, 500)
    here.merge(there.full_state())
    here.add("depth", "gauge", 5.0, 400, relative=True)
    assert here.read_key("depth")[0].value == 15.0
    there.merge(here.full_state())
    assert there.read_key("depth")[0].value == 15.0, "the adjusted write wins everywhere"


def test_gauge_batch_keeps_the_latest_event_time_not_the_latest_position() -> None:
    store = WindowStore("n1~0001", WindowConfig(size_ms=1_000))
    store.ingest("gauge", ["g"], np.zeros(3, np.int64), np.array([1.0, 2.0, 3.0]), [300, 500, 100])
    assert store.read_key("g")[0].value == 2.0


def test_gauge_batch_at_one_event_time_keeps_each_keys_last_row() -> None:
    store = WindowStore("n1~0001", WindowConfig(size_ms=1_000))
    keys = np.array([0, 1, 0, 2, 1, 0, 2, 2], np.int64)
    values = np.arange(8, dtype=np.float64)
    store.ingest("gauge", ["a", "b", "c"], keys, values, [400] * 8)
    assert store.read_window(0).values == {"a": 5.0, "b": 4.0, "c": 7.0}


def test_sample_rate_weights_count_like_a_distribution_with_counts() -> None:
    store = WindowStore("n1~0001", WindowConfig(size_ms=1_000))
    values = np.array([1.5, 30.0, 0.0, -4.0, 30.0])
    weights = np.array([10.0, 2.0, 1.0, 4.0, 1.0])
    store.ingest("distribution", ["lat"], np.zeros(5, np.int64), values, [1] * 5, weights=weights)
    expected = Distribution("n1~0001", relative_accuracy=0.01)
    for value, weight in zip(values, weights, strict=True):
        expected.add(float(value), int(weight))
    got = store.read_key("lat")[0].value
    assert isinstance(got, DistributionValue)
    assert (got.count, got.total, got.minimum, got.maximum) == (
        expected.count,
        expected.sum,
        expected.min,
        expected.max,
    )
    for q in (0.0, 0.1, 0.5, 0.75, 1.0):
        assert got.quantile(q) == expected.quantile(q), q


def test_set_remove_and_kind_conflicts() -> None:
    store = WindowStore("n1~0001", WindowConfig(size_ms=1_000))
    store.add("members", "set", "alice", 10)
    store.add("members", "set", b"bob", 20)
    assert store.remove("members", "alice", 30)
    assert not store.remove("members", "carol", 30)
    assert store.read_key("members")[0].value == frozenset({b"bob"})
    store.add("hits", "counter", 1, 10)
    with pytest.raises(KindConflictError):
        store.remove("hits", "x", 10)


def test_merge_skips_conflicting_kinds_and_evicted_slices() -> None:
    config = WindowConfig(size_ms=1_000, retention_windows=2, allowed_lateness_ms=0)
    source, target = WindowStore("a~0001", config), WindowStore("b~0001", config)
    source.add("k", "counter", 1, 10)
    source.add("old", "counter", 1, 10)
    target.add("k", "gauge", 1.0, 10)
    target.advance(5_000)
    novelty = target.merge(source.full_state())
    assert novelty.is_empty()
    assert target.merge_rejected_cells == 1
    assert target.read_key("old") == []


def test_finality_is_the_callers_verdict_and_window_versions_merge_by_max() -> None:
    config = WindowConfig(size_ms=1_000)
    first, second = WindowStore("a~0001", config), WindowStore("b~0001", config)
    first.add("k", "counter", 1, 10)
    first.add("k", "counter", 1, 20)
    second.add("k", "counter", 1, 30)
    first.merge(second.full_state())
    assert first.window_versions(0) == {"a~0001": 2, "b~0001": 1}
    assert first.read_window(0, final_through_ms=999).final is False
    assert first.read_window(0, final_through_ms=1_000).final is True
    assert [w.final for w in first.read_key("k", final_through_ms=1_000)] == [True]
    assert StoreDelta.from_bytes(first.delta_since(0).to_bytes()).windows.count.tolist() == [2, 1]


def test_programming_errors_raise_clearly() -> None:
    store = WindowStore("n1~0001", WindowConfig())
    with pytest.raises(ValueError, match="kind"):
        store.ingest("histogram", ["k"], [0], [1.0], [0])
    with pytest.raises(ValueError, match="length"):
        store.ingest("counter", ["k"], [0, 0], [1.0], [0, 0])
    with pytest.raises(ValueError, match="key_index"):
        store.ingest("counter", ["k"], [1], [1.0], [0])
    with pytest.raises(ValueError, match="key_index"):
        store.ingest("counter", ["k"], [-1], [1.0], [0])


def test_repeated_and_conflicting_names_in_one_batch() -> None:
    store = WindowStore("n1~0001", WindowConfig(size_ms=1_000))
    store.add("g", "gauge", 1.0, 0)
    names = ["a", "a", "g", "g", "b"]
    result = store.ingest("counter", names, [0, 1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0, 5.0], [0] * 5)
    assert (result.accepted, result.rejected, result.rejected_keys) == (3, 2, ("g",))
    assert store.read_window(0).values == {"a": 3.0, "b": 5.0, "g": 1.0}
    again = store.ingest("counter", names, [4, 0, 2], [1.0, 1.0, 1.0], [0] * 3)
    assert (again.accepted, again.rejected_keys) == (2, ("g",))
    assert store.read_window(0).values == {"a": 4.0, "b": 6.0, "g": 1.0}


def test_window_versions_of_a_hopping_window_sum_its_slices() -> None:
    first, second = WindowStore("a~0001", HOPPING), WindowStore("b~0001", HOPPING)
    first.add("k", "counter", 1, 100)
    first.add("k", "counter", 1, 600)
    second.add("k", "counter", 1, 300)
    second.merge(first.full_state())
    assert second.window_versions(0) == {"a~0001": 2, "b~0001": 1}
    assert second.window_versions(500) == {"a~0001": 1}
