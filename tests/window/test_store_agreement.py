"""A store agrees with per-key CRDT objects fed the same events, across replicas and merges."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from crdtstream.crdt import (
    Distribution,
    HyperLogLog,
    LWWRegister,
    MaxRegister,
    MinRegister,
    ORSet,
    PNCounter,
)
from crdtstream.window.kinds.distribution import DistributionValue
from crdtstream.window.store import WindowStore

from .support import CONFIG

REPLICAS = ("n1~0001", "n2~0002")
KINDS = ("counter", "gauge", "set", "distinct", "distribution", "max", "min")

EVENTS = st.lists(
    st.tuples(
        st.integers(0, 1),  # replica
        st.sampled_from(KINDS),
        st.integers(0, 1),  # key
        st.integers(0, 2),  # window
        st.integers(0, 999),  # offset in the window
        st.integers(-5, 5),  # value
    ),
    max_size=80,
)


def _crdt(kind: str, replica: str) -> Any:
    if kind == "counter":
        return PNCounter(replica)
    if kind == "gauge":
        return LWWRegister(replica)
    if kind == "set":
        return ORSet(replica)
    if kind == "distinct":
        return HyperLogLog(replica, precision=CONFIG.distinct_precision)
    if kind == "distribution":
        return Distribution(replica, relative_accuracy=CONFIG.distribution_relative_accuracy)
    return MaxRegister(replica) if kind == "max" else MinRegister(replica)


def _apply(store: WindowStore, crdt: Any, kind: str, key: str, stamp: int, value: int) -> None:
    if kind == "set":
        item = f"i{abs(value) % 3}"
        if value < 0:
            store.remove(key, item, stamp)
            crdt.remove(item)
        else:
            store.add(key, "set", item, stamp)
            crdt.add(item)
    elif kind == "distinct":
        store.add(key, kind, value, stamp)
        crdt.add(value)
    else:
        store.add(key, kind, float(value), stamp)
        {
            "counter": lambda: crdt.add(value),
            "gauge": lambda: crdt.set(float(value), stamp),
            "distribution": lambda: crdt.add(float(value)),
            "max": lambda: crdt.observe(float(value)),
            "min": lambda: crdt.observe(float(value)),
        }[kind]()


def _agrees(kind: str, got: object, crdt: Any) -> bool:
    if kind == "distribution":
        assert isinstance(got, DistributionValue)
        same_stats = (got.count, got.minimum, got.maximum) == (crdt.count, crdt.min, crdt.max)
        quantiles = all(got.quantile(q) == crdt.quantile(q) for q in (0, 0.25, 0.5, 0.9, 1))
        return same_stats and abs(got.total - crdt.sum) < 1e-9 and quantiles
    expected = crdt.value
    return bool(got == expected) if not isinstance(got, float) else got == float(expected)


@given(EVENTS)
def test_store_agrees_with_crdt_objects(events: list[tuple[int, str, int, int, int, int]]) -> None:
    stores = [WindowStore(replica, CONFIG) for replica in REPLICAS]
    crdts: dict[tuple[str, int], list[Any]] = defaultdict(list)
    kind_of: dict[str, str] = {}
    for replica, kind, key_number, window, offset, value in events:
        key = f"{kind}{key_number}"
        kind_of[key] = kind
        objects = crdts[(key, window)]
        if not objects:
            objects.extend(_crdt(kind, r) for r in REPLICAS)
        stamp = window * CONFIG.size_ms + offset
        _apply(stores[replica], objects[replica], kind, key, stamp, value)
    left, right = stores
    left.merge(right.full_state())
    right.merge(left.delta_since(0))
    for (key, window), (first, second) in crdts.items():
        first.merge(second)
        start = window * CONFIG.size_ms
        for store in stores:
            found = {w.start_ms: w.value for w in store.read_key(key)}
            if start not in found:
                # Adding 0 or removing an absent item changes no state, so no window appears.
                assert kind_of[key] in ("counter", "set"), (key, window, events)
                assert not first.value, (key, window, events)
                continue
            assert _agrees(kind_of[key], found[start], first), (key, window, found[start], events)
