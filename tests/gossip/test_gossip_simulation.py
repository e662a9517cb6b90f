"""Convergence under loss, duplication, reordering, partitions and crashes, over many seeds.

Every scenario: 3-5 nodes, random ingest on all of them under 30 % loss, 10 % duplication and
reordering; a partition (halves, one node isolated, or none) that heals; a crash with the data
directory, without it (a new replica id), twice in quick succession, for good (then removed by
an operator), or a pause longer than the failure detector's timeout. After the quiet period
every running node must hold exactly the acknowledged writes (0 lost, 0 double counted) and
every window must be final on every running node; all along, ``final`` is polled on every node
and a value reported final must never change, on any node. A failure names its seed: rerun
``run_scenario(seed)``.

CI runs ``CI_SEEDS`` seeds; ``CRDTSTREAM_GOSSIP_SEEDS=n`` (or ``first:end``) runs others.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
from gossip_scenarios import Plan, run_scenario

CI_SEEDS = 50


def _seeds() -> range:
    chosen = os.environ.get("CRDTSTREAM_GOSSIP_SEEDS")
    if not chosen:
        return range(CI_SEEDS)
    first, _, end = chosen.partition(":")
    return range(int(first), int(end)) if end else range(int(first))


SEEDS = _seeds()
PLAN_SEEDS = range(200)


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
    assert not cluster.finality_violations, (
        f"seed={seed} plan={plan}: a value reported final changed: "
        f"{cluster.finality_violations[:5]}"
    )
    assert cluster.finals_seen, f"seed={seed}: no window was ever final"
    if plan.crash == "pause":
        # The fault happened: someone declared the paused node dead before it resumed.
        assert cluster.pause_verdicts > 0, f"seed={seed} plan={plan}: pause too short"
    assert settled, f"seed={seed} plan={plan}: converged but windows not final in time"


def test_the_plans_cover_every_kind_of_fault() -> None:
    plans = [Plan.draw(seed) for seed in PLAN_SEEDS]
    assert {plan.partition for plan in plans} == {"halves", "isolate", "none"}
    crashes = {"disk", "no_disk", "disk_twice", "no_disk_twice", "pause", "forever"}
    assert {plan.crash for plan in plans} == crashes
    ci_plans = [Plan.draw(seed) for seed in range(CI_SEEDS)]
    assert {plan.crash for plan in ci_plans} == crashes


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
            for name in ("crashes", "restarts", "disks_lost", "pauses", "partitions")
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
