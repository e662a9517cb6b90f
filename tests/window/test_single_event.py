"""One event (a single write) takes scalar shortcuts through screening and the counter table;
a store fed single events must end exactly where the batch path leaves it."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from crdtstream.window.store import WindowStore

from .support import CONFIG

REPLICA = "n1~0001"
START_MS = 1_700_000_000_000
KEYS = ("a", "b", "c")

VALUES = st.one_of(
    st.integers(-5, 5).map(float),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e-300, -1e-300]),
)
EVENTS = st.lists(
    st.tuples(
        st.sampled_from(("counter", "gauge", "max", "min")),
        st.sampled_from(KEYS),
        st.integers(0, 3),  # window
        st.integers(0, 999),  # offset in the window
        VALUES,
    ),
    max_size=60,
)


def _padded(kind: str, value: float) -> list[float]:
    """The event as a batch of two that means the same: a counter adds zero beside it, the
    other kinds repeat it (an idempotent join)."""
    return [value, 0.0] if kind == "counter" else [value, value]


@given(EVENTS)
def test_single_events_leave_the_store_as_batches_of_the_same_events_do(
    events: list[tuple[str, str, int, int, float]],
) -> None:
    single, batched = WindowStore(REPLICA, CONFIG), WindowStore(REPLICA, CONFIG)
    for kind, key, window, offset, value in events:
        # Each key keeps the kind of its first event; another kind is rejected by both paths.
        stamp = START_MS + window * CONFIG.size_ms + offset
        one = single.add(f"{kind}.{key}", kind, value, stamp)
        two = batched.ingest(
            kind,
            [f"{kind}.{key}"],
            np.zeros(2, dtype=np.int64),
            np.asarray(_padded(kind, value)),
            np.full(2, stamp, dtype=np.int64),
        )
        assert (one.accepted, one.late, one.invalid) == (
            min(two.accepted, 1),
            min(two.late, 1),
            min(two.invalid, 1),
        )
    assert single.version == batched.version
    assert single.window_starts() == batched.window_starts()
    assert single.full_state().to_bytes() == batched.full_state().to_bytes()


def test_a_zero_counter_event_touches_no_window() -> None:
    store = WindowStore(REPLICA, CONFIG)
    result = store.add("hits", "counter", 0.0, START_MS)
    assert result.accepted == 1
    assert store.window_starts() == []
    assert store.window_counts == {}


def test_a_negative_counter_event_lands_in_the_negative_column() -> None:
    store = WindowStore(REPLICA, CONFIG)
    store.add("hits", "counter", 5.0, START_MS)
    store.add("hits", "counter", -2.0, START_MS)
    (start,) = store.window_starts()
    assert store.read_window(start).values == {"hits": 3.0}


def test_a_single_non_finite_value_is_invalid_and_changes_nothing() -> None:
    store = WindowStore(REPLICA, CONFIG)
    for value in (math.nan, math.inf, -math.inf):
        result = store.add("hits", "counter", value, START_MS)
        assert (result.accepted, result.invalid) == (0, 1), value
    assert store.version == 0
    assert store.window_starts() == []
