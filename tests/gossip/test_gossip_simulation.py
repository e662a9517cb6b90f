"""Convergence under loss, duplication, reordering, partitions and crashes, over many seeds.

Every scenario: 3-5 nodes, random ingest on all of them under 30 % loss, 10 % duplication and
reordering; a partition (halves, one node isolated, or none) that heals; a crash with the data
directory, without it (a new replica id), or for good. After the quiet period every running
node must hold exactly the acknowledged writes (0 lost, 0 double counted) and every window must
be final on every running node. A failure names its seed: rerun ``run_scenario(seed)``.
"""

from __future__ import annotations

import dataclasses

import pytest
from gossip_scenarios import Plan, run_scenario

SEEDS = range(200)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_every_node_converges_to_the_acknowledged_sums_and_goes_final(seed: int) -> None:
    cluster, plan, settled = run_scenario(seed)
    expected = cluster.expected_cells()
    for node in cluster.running_nodes():
        held = node.lattice.full_state().cells
        missing = {cell: v for cell, v in expected.items() if held.get(cell) != v}
        extra = {cell: v for cell, v in held.items() if cell not in expected}
        where = f"seed={seed} plan={plan} node={node.node_id}"
        assert not missing, f"{where}: cells lost or wrong {missing}"
        assert not extra, f"{where}: cells that no one wrote {extra}"
    assert settled, f"seed={seed} plan={plan}: converged but windows not final in time"


def test_the_plans_cover_every_kind_of_fault() -> None:
    plans = [Plan.draw(seed) for seed in SEEDS]
    assert {plan.partition for plan in plans} == {"halves", "isolate", "none"}
    assert {plan.crash for plan in plans} == {"disk", "no_disk", "forever"}


def test_over_the_seeds_every_fault_happened_and_every_seed_converged() -> None:
    """The scenarios check per seed that their plan's crashes, restarts and partitions
    happened; here, summed over seeds, that the failure detector and anti-entropy saw them."""
    seeds = range(24)
    outcomes = [run_scenario(seed) for seed in seeds]
    unsettled = [seed for seed, (_, _, settled) in zip(seeds, outcomes, strict=True) if not settled]
    assert not unsettled, f"seeds that did not converge and go final: {unsettled}"
    totals = {
        name: sum(cluster.stat_total(name) for cluster, _, _ in outcomes)
        for name in ("suspected", "declared_dead", "refuted", "peer_restarts_seen")
    }
    totals.update(
        {
            name: sum(cluster.events[name] for cluster, _, _ in outcomes)
            for name in ("crashes", "restarts", "disks_lost", "partitions")
        }
    )
    never = [name for name, count in totals.items() if count == 0]
    assert not never, f"seeds {seeds}: never happened: {never} ({totals})"


def test_a_seed_reproduces_the_same_run() -> None:
    """Everything random comes from the seed, so a failing seed replays exactly."""

    def fingerprint(seed: int) -> tuple[object, ...]:
        cluster, plan, settled = run_scenario(seed)
        states = {
            node.node_id: sorted(node.lattice.full_state().cells.items())
            for node in cluster.running_nodes()
        }
        stats = {node.node_id: node.core.stats for node in cluster.running_nodes() if node.core}
        return plan, settled, cluster.now_ms, cluster.network.stats(), states, stats

    assert fingerprint(17) == fingerprint(17)
    assert fingerprint(17) != fingerprint(18)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12))
def test_a_twelve_node_cluster_converges_over_the_finger_overlay(seed: int) -> None:
    """With 12 nodes a node ships deltas to only part of its peers (its overlay fingers)."""

    def twelve(plan: Plan) -> Plan:
        return dataclasses.replace(plan, node_count=12, victim=f"n{seed % 12}")

    cluster, plan, settled = run_scenario(seed, adjust=twelve)
    expected = cluster.expected_cells()
    for node in cluster.running_nodes():
        assert node.lattice.full_state().cells == expected, f"seed={seed} plan={plan}"
    assert settled, f"seed={seed} plan={plan}: converged but windows not final in time"
