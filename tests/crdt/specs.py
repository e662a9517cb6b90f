"""How each CRDT type joins the shared law suite and the convergence property.

A :class:`TypeSpec` gives a Hypothesis strategy of single operations, how to apply one to an
object (returning the delta), and a *sequential model*: an operation becomes an event with a
unique id, a replica's model state is the set of events it has seen, and ``model_value`` turns
such a set into the value the type must show (in the style of riak_dt's ``crdt_statem_eqc``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from crdtstream.crdt import (
    BoundedCounter,
    Crdt,
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
from crdtstream.errors import RefusedError

Uid = tuple[str, int]
Event = tuple[Uid, Any]
"""An operation as the model records it: a unique id and a type-specific payload."""


@dataclass(frozen=True)
class TypeSpec:
    """One type's entry in the law suite and the convergence property."""

    name: str
    build: Callable[[str], Crdt]
    operations: st.SearchStrategy[Any]
    apply: Callable[[Any, Any], Crdt]
    model_event: Callable[[frozenset[Event], Any], Any]
    model_value: Callable[[frozenset[Event]], Any]
    observe: Callable[[Any], Any]

    def __str__(self) -> str:
        return self.name


items = st.one_of(
    st.sampled_from(["a", "b", "c", "é"]),
    st.sampled_from([b"x", b"y\x01"]),
    st.integers(min_value=-3, max_value=3),
)
eighths = st.integers(min_value=-800, max_value=800).map(lambda k: k / 8)


def _payloads(events: frozenset[Event]) -> list[Any]:
    return [payload for _, payload in events]


# Counters -------------------------------------------------------------------------------------


def _sum_model(events: frozenset[Event]) -> int:
    return sum(_payloads(events))


GCOUNTER = TypeSpec(
    name="GCounter",
    build=GCounter,
    operations=st.integers(min_value=0, max_value=100),
    apply=lambda counter, n: counter.add(n),
    model_event=lambda events, n: n,
    model_value=_sum_model,
    observe=lambda counter: counter.value,
)

PNCOUNTER = TypeSpec(
    name="PNCounter",
    build=PNCounter,
    operations=st.integers(min_value=-100, max_value=100),
    apply=lambda counter, n: counter.add(n),
    model_event=lambda events, n: n,
    model_value=_sum_model,
    observe=lambda counter: counter.value,
)

# Sets -----------------------------------------------------------------------------------------

GSET = TypeSpec(
    name="GSet",
    build=GSet,
    operations=items,
    apply=lambda gset, item: gset.add(item),
    model_event=lambda events, item: item,
    model_value=lambda events: frozenset(_payloads(events)),
    observe=lambda gset: gset.value,
)


def _orset_live(events: frozenset[Event]) -> dict[Uid, Any]:
    """Add events whose uid no later event (an add of the same item, a remove) has observed."""
    observed: set[Uid] = set()
    for _, (_, _, seen) in events:
        observed |= seen
    return {uid: item for uid, (kind, item, _) in events if kind == "add" and uid not in observed}


def _orset_event(events: frozenset[Event], operation: tuple[str, Any]) -> Any:
    kind, item = operation
    seen = frozenset(uid for uid, live_item in _orset_live(events).items() if live_item == item)
    return (kind, item, seen)


ORSET = TypeSpec(
    name="ORSet",
    build=ORSet,
    operations=st.tuples(st.sampled_from(["add", "add", "remove"]), items),
    apply=lambda orset, op: orset.add(op[1]) if op[0] == "add" else orset.remove(op[1]),
    model_event=_orset_event,
    model_value=lambda events: frozenset(_orset_live(events).values()),
    observe=lambda orset: orset.value,
)

# Registers ------------------------------------------------------------------------------------


def _lww_model(events: frozenset[Event]) -> Any:
    if not events:
        return None
    # Order: timestamp, then replica name, then the writer's own operation order.
    winner = max(events, key=lambda event: (event[1][0], event[0][0], event[0][1]))
    return winner[1][1]


LWW_REGISTER = TypeSpec(
    name="LWWRegister",
    build=LWWRegister,
    operations=st.tuples(st.integers(min_value=0, max_value=5), st.sampled_from(["u", "v", "w"])),
    apply=lambda register, op: register.set(op[1], timestamp_ms=op[0]),
    model_event=lambda events, op: op,
    model_value=_lww_model,
    observe=lambda register: register.value,
)

MAX_REGISTER = TypeSpec(
    name="MaxRegister",
    build=MaxRegister,
    operations=eighths,
    apply=lambda register, x: register.observe(x),
    model_event=lambda events, x: x,
    model_value=lambda events: max(_payloads(events), default=None),
    observe=lambda register: register.value,
)

MIN_REGISTER = TypeSpec(
    name="MinRegister",
    build=MinRegister,
    operations=eighths,
    apply=lambda register, x: register.observe(x),
    model_event=lambda events, x: x,
    model_value=lambda events: min(_payloads(events), default=None),
    observe=lambda register: register.value,
)

# Sketches -------------------------------------------------------------------------------------

HLL_PRECISION = 6


def _hll_apply(sketch: HyperLogLog, op: tuple[str, Any]) -> HyperLogLog:
    kind, payload = op
    return sketch.add(payload) if kind == "add" else sketch.add_many(payload)


def _hll_model(events: frozenset[Event]) -> bytes:
    """The registers of one sketch that saw every item: what any merge must reproduce."""
    reference = HyperLogLog("model", HLL_PRECISION)
    for kind, payload in _payloads(events):
        for item in [payload] if kind == "add" else payload:
            reference.add(item)
    return reference.registers.tobytes()


HYPER_LOG_LOG = TypeSpec(
    name="HyperLogLog",
    build=lambda replica: HyperLogLog(replica, HLL_PRECISION),
    operations=st.one_of(
        st.tuples(st.just("add"), st.one_of(st.text(max_size=4), st.integers())),
        st.tuples(st.just("add_many"), st.lists(st.text(max_size=4), max_size=20)),
        st.tuples(st.just("add_many"), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=20)),
    ),
    apply=_hll_apply,
    model_event=lambda events, op: (op[0], tuple(op[1]) if op[0] == "add_many" else op[1]),
    model_value=_hll_model,
    observe=lambda sketch: sketch.registers.tobytes(),
)

QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)


def _distribution_apply(distribution: Distribution, op: tuple[str, Any, int]) -> Distribution:
    kind, payload, count = op
    if kind == "add":
        return distribution.add(payload, count)
    return distribution.add_many(payload)


def _distribution_values(events: frozenset[Event]) -> list[float]:
    values: list[float] = []
    for kind, payload, count in _payloads(events):
        values.extend([payload] * count if kind == "add" else payload)
    return values


def _distribution_model(events: frozenset[Event]) -> Any:
    """Exact count, sum, min, max; quantiles of one sketch that saw every value."""
    values = _distribution_values(events)
    reference = Distribution("model")
    for value in values:
        reference.add(value)
    quantiles = tuple(reference.quantile(q) for q in QUANTILES)
    if not values:
        return (0, 0.0, None, None, quantiles)
    return (len(values), sum(values), min(values), max(values), quantiles)


DISTRIBUTION = TypeSpec(
    name="Distribution",
    build=Distribution,
    operations=st.one_of(
        st.tuples(st.just("add"), eighths, st.integers(min_value=1, max_value=3)),
        st.tuples(st.just("add_many"), st.lists(eighths, max_size=20), st.just(1)),
    ),
    apply=_distribution_apply,
    model_event=lambda events, op: (op[0], tuple(op[1]) if op[0] == "add_many" else op[1], op[2]),
    model_value=_distribution_model,
    observe=lambda d: (d.count, d.sum, d.min, d.max, tuple(d.quantile(q) for q in QUANTILES)),
)

SPECS = [
    GCOUNTER,
    PNCOUNTER,
    GSET,
    ORSET,
    LWW_REGISTER,
    MAX_REGISTER,
    MIN_REGISTER,
    HYPER_LOG_LOG,
    DISTRIBUTION,
]

# Bounded counter ------------------------------------------------------------------------------

BOUNDED_TARGETS = ("a", "b", "c", "r0", "r1", "r2")


def _bounded_event(events: frozenset[Event], operation: tuple[str, int, str]) -> Any:
    """The operation and what its replica had seen: whether it succeeded depends on both."""
    return (operation, frozenset(uid for uid, _ in events))


def _bounded_replay(events: frozenset[Event]) -> dict[Uid, tuple[str, int, str]]:
    """The operations that succeeded, decided one by one in the order they were made: a spend
    or a transfer succeeds iff its replica's rights over what it had seen cover it."""
    done: dict[Uid, tuple[str, int, str]] = {}
    for uid, (operation, seen) in sorted(events, key=lambda event: event[0][1]):
        kind, n, target = operation
        if kind == "transfer" and target == uid[0]:
            continue  # to itself: refused as a no-op
        if kind != "grant":
            own = (*seen, uid)
            if n > _model_rights(uid[0], [(*done[s], s[0]) for s in own if s in done]):
                continue
        done[uid] = operation
    return done


def _model_rights(replica: str, operations: list[tuple[str, int, str, str]]) -> int:
    held = 0
    for kind, n, target, origin in operations:
        if origin == replica:
            held += n if kind == "grant" else -n
        elif kind == "transfer" and target == replica:
            held += n
    return held


def _bounded_model(events: frozenset[Event]) -> Any:
    done = _bounded_replay(events)
    operations = [(*operation, uid[0]) for uid, operation in done.items()]
    spent = sum(n for kind, n, _, _ in operations if kind == "consume")
    granted = sum(n for kind, n, _, _ in operations if kind == "grant")
    replicas = {origin for *_, origin in operations} | set(BOUNDED_TARGETS)
    rights = {r: _model_rights(r, operations) for r in sorted(replicas)}
    return (spent, granted, {r: n for r, n in rights.items() if n})


def _bounded_apply(counter: Any, operation: tuple[str, int, str]) -> Crdt:
    kind, n, target = operation
    try:
        if kind == "grant":
            return counter.grant(n)  # type: ignore[no-any-return]
        if kind == "consume":
            return counter.consume(n)  # type: ignore[no-any-return]
        if target == counter.replica:
            return BoundedCounter(counter.replica)
        return counter.transfer(n, target)  # type: ignore[no-any-return]
    except RefusedError:
        return BoundedCounter(counter.replica)  # refused: nothing changed, an empty delta


BOUNDED_COUNTER = TypeSpec(
    name="BoundedCounter",
    build=BoundedCounter,
    operations=st.tuples(
        st.sampled_from(["grant", "consume", "consume", "transfer"]),
        st.integers(min_value=0, max_value=20),
        st.sampled_from(BOUNDED_TARGETS),
    ),
    apply=_bounded_apply,
    model_event=_bounded_event,
    model_value=_bounded_model,
    observe=lambda counter: (counter.value, counter.granted, counter.all_rights()),
)

SPECS.append(BOUNDED_COUNTER)
