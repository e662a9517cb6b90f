"""The same fault simulation with the windowed store (numpy columns) as the replicated lattice.

Counters only, and crashes keep their data directory (the store-level oracle compares totals per
key and window, which cannot tell a retired replica's replicated prefix from a loss); the
slot-level oracle of ``test_gossip_simulation`` covers disk loss with the reference lattice.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import pytest
from gossip_scenarios import KEYS, Plan, run_scenario
from gossip_simulation import WINDOW, Cluster

from crdtstream.window.delta import StoreDelta
from crdtstream.window.store import WindowStore

SEEDS = range(40)


class StoreCluster(Cluster):
    """A cluster whose nodes replicate a :class:`WindowStore`."""

    decode_delta = staticmethod(StoreDelta.from_bytes)  # type: ignore[assignment]  # its lattice
    totals: dict[tuple[str, int], float]

    def new_lattice(self, replica: str) -> Any:
        return WindowStore(replica, WINDOW)

    def ingest(self, node_id: str, key: str, amount: int) -> None:
        store = cast(WindowStore, self.nodes[node_id].lattice)
        if store.add(key, "counter", float(amount), self.now_ms).accepted == 1:
            start = self.now_ms - self.now_ms % WINDOW.size_ms
            cell = (key, start, store.replica)
            self.acknowledged[cell] = self.acknowledged.get(cell, 0) + amount

    def expected_totals(self) -> dict[tuple[str, int], float]:
        totals: dict[tuple[str, int], float] = {}
        for (key, start, _replica), amount in self.acknowledged.items():
            totals[(key, start)] = totals.get((key, start), 0.0) + amount
        return totals

    def store_totals(self, lattice: object) -> dict[tuple[str, int], float]:
        store = cast(WindowStore, lattice)  # the base cluster is typed for its own lattice
        return {
            (key, value.start_ms): float(value.value)  # type: ignore[arg-type]
            for key in KEYS
            for value in store.read_key(key)
        }

    def totals_of(self, node: Any) -> dict[tuple[str, int], float]:
        return self.store_totals(node.lattice)

    def converged(self) -> bool:
        expected = self.expected_totals()
        return all(self.store_totals(n.lattice) == expected for n in self.running_nodes())


def keep_disk(plan: Plan) -> Plan:
    return dataclasses.replace(plan, crash="disk")


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_stores_converge_to_the_acknowledged_sums_and_go_final(seed: int) -> None:
    cluster, plan, settled = run_scenario(seed, cluster_type=StoreCluster, adjust=keep_disk)
    assert isinstance(cluster, StoreCluster)
    expected = cluster.expected_totals()
    for node in cluster.running_nodes():
        held = cluster.store_totals(node.lattice)
        assert held == expected, f"seed={seed} plan={plan} node={node.node_id}"
    assert not cluster.finality_violations, (
        f"seed={seed} plan={plan}: a value reported final changed: "
        f"{cluster.finality_violations[:5]}"
    )
    assert settled, f"seed={seed} plan={plan}: converged but windows not final in time"
