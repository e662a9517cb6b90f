"""Lateness, idle advance and retention of the store, with exact accounting."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from crdtstream.config import WindowConfig
from crdtstream.window.store import WindowStore

CONFIG = WindowConfig(size_ms=1_000, allowed_lateness_ms=500, retention_windows=3)


def test_late_events_are_counted_per_key_and_not_applied() -> None:
    store = WindowStore("n1~0001", CONFIG)
    store.add("a", "counter", 1, 100)
    store.add("a", "counter", 1, 2_600)  # watermark 2_100: window [0, 1000) closed
    result = store.ingest(
        "counter",
        ["a", "b"],
        np.array([0, 1, 1, 0]),
        np.array([5.0, 5.0, 5.0, 7.0]),
        np.array([999, 500, 1_500, 2_000]),
    )
    assert (result.accepted, result.late) == (1, 3)
    assert result.late_by_key == {"a": 1, "b": 2}
    assert store.late_total == 3
    assert store.late_by_key == {"a": 1, "b": 2}
    values = {w.start_ms: w.value for w in store.read_key("a")}
    assert values == {0: 1.0, 2_000: 8.0}


def test_idle_advance_closes_windows_without_new_events() -> None:
    store = WindowStore("n1~0001", CONFIG)
    store.add("a", "counter", 1, 100)
    assert store.add("a", "counter", 1, 200).late == 0
    store.advance(1_500)
    assert store.watermark_ms == 1_000
    assert store.add("a", "counter", 1, 300).late == 1


def test_retention_evicts_old_windows_and_reports_them() -> None:
    store = WindowStore("n1~0001", CONFIG)
    for second in range(3):
        store.add("a", "counter", 1, second * 1_000)
    result = store.add("a", "counter", 1, 3_000)
    assert result.evicted_windows_ms == (0,)
    assert store.window_starts() == [1_000, 2_000, 3_000]
    assert store.advance(10_000) == (1_000, 2_000, 3_000)
    assert store.read_key("a") == []


@given(st.lists(st.tuples(st.integers(0, 20_000), st.integers(0, 3)), max_size=60))
def test_every_event_is_accepted_late_rejected_or_invalid(events: list[tuple[int, int]]) -> None:
    store = WindowStore("n1~0001", CONFIG)
    store.add("gauge-key", "gauge", 1.0, 0)
    names = ["a", "b", "c", "gauge-key"]
    accepted = late = rejected = 0
    for stamp, key in events:
        result = store.ingest("counter", names, np.array([key]), np.array([1.0]), np.array([stamp]))
        accepted, late, rejected = (
            accepted + result.accepted,
            late + result.late,
            rejected + result.rejected,
        )
    assert accepted + late + rejected == len(events), events
    assert late == store.late_total
    assert rejected == store.rejected_total
    total = sum(w.value for k in "abc" for w in store.read_key(k))  # type: ignore[misc]
    retained = sum(1 for w in store.window_starts() for _ in [w])
    assert total <= accepted
    assert retained <= CONFIG.retention_windows


def test_kind_conflicts_and_invalid_values_are_counted_not_raised() -> None:
    store = WindowStore("n1~0001", CONFIG)
    store.add("a", "counter", 1, 0)
    result = store.ingest(
        "gauge",
        ["a", "g"],
        np.array([0, 1, 1, 1]),
        np.array([1.0, np.nan, 2.0, np.inf]),
        np.array([0, 0, 0, 0]),
    )
    assert (result.accepted, result.rejected, result.invalid) == (1, 1, 2)
    assert result.rejected_keys == ("a",)
    assert store.read_window(0).values == {"a": 1.0, "g": 2.0}
