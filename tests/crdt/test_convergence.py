"""Convergence against a sequential model, per type (riak_dt ``crdt_statem_eqc`` style).

Three replicas apply random operations and now and then merge each other's full state; after
every step each replica's value must equal the model's value of the events it has seen. Every
delta is also delivered to a fourth replica, in a random order, with losses repaired by full
state at the end and with duplicates. At the end every replica holds every event and all of
them equal the model's value of all events.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtstream.crdt import Crdt
from tests.crdt.specs import SPECS, Event, TypeSpec

REPLICAS = ("r0", "r1", "r2")
STEPS = 40


class Cluster:
    """The replicas under test, the model state of each, and the deltas in flight."""

    def __init__(self, spec: TypeSpec, rng: random.Random, seed: int) -> None:
        self.spec, self.rng, self.seed = spec, rng, seed
        self.states: dict[str, Crdt] = {name: spec.build(name) for name in REPLICAS}
        self.seen: dict[str, frozenset[Event]] = {name: frozenset() for name in REPLICAS}
        self.sequence = 0
        self.in_flight: list[Crdt] = []
        self.delta_receiver = spec.build("deltas")

    def operate(self, replica: str, operation: Any) -> None:
        self.sequence += 1
        event = ((replica, self.sequence), self.spec.model_event(self.seen[replica], operation))
        self.in_flight.append(self.spec.apply(self.states[replica], operation))
        self.seen[replica] = self.seen[replica] | {event}
        self.check(replica, f"after an operation at {replica}")

    def sync(self, source: str, target: str) -> None:
        self.states[target].merge(self.states[source].copy())
        self.seen[target] = self.seen[target] | self.seen[source]
        self.check(target, f"after merging {source} into {target}")

    def deliver_some_deltas(self) -> None:
        """Deliver a random few in-flight deltas (kept in flight: they may come again)."""
        for delta in self.rng.sample(self.in_flight, min(3, len(self.in_flight))):
            self.delta_receiver.merge(delta)

    def check(self, replica: str, when: str) -> None:
        expected = self.spec.model_value(self.seen[replica])
        actual = self.spec.observe(self.states[replica])
        assert actual == expected, f"{self.spec} seed={self.seed} {when}: {actual!r} != model"

    def finish(self) -> None:
        everything = frozenset().union(*self.seen.values())
        expected = self.spec.model_value(everything)
        self.rng.shuffle(self.in_flight)
        for delta in self.in_flight:
            self.delta_receiver.merge(delta)
        for name in REPLICAS:
            for other in REPLICAS:
                self.states[name].merge(self.states[other].copy())
        final = [self.states[name] for name in REPLICAS] + [self.delta_receiver]
        for state in final:
            assert state == final[0], f"{self.spec} seed={self.seed}: replicas differ at the end"
            assert self.spec.observe(state) == expected, f"{self.spec} seed={self.seed}: != model"


@pytest.mark.parametrize("spec", SPECS, ids=str)
@settings(max_examples=30)
@given(data=st.data())
def test_replicas_converge_to_the_model(spec: TypeSpec, data: st.DataObject) -> None:
    seed = data.draw(st.integers(min_value=0, max_value=2**32 - 1), label="seed")
    rng = random.Random(seed)
    cluster = Cluster(spec, rng, seed)
    for _ in range(STEPS):
        roll = rng.random()
        if roll < 0.6:
            cluster.operate(rng.choice(REPLICAS), data.draw(spec.operations))
        elif roll < 0.8:
            source, target = rng.sample(REPLICAS, 2)
            cluster.sync(source, target)
        else:
            cluster.deliver_some_deltas()
    cluster.finish()
