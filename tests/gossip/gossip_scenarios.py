"""Randomised fault scenarios for the gossip simulation, each fully determined by its seed."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from gossip_simulation import Cluster

from transports.memory import FaultOptions

STEP_MS = 50
INGEST_UNTIL_MS = 4_000
QUIET_DEADLINE_MS = 40_000
CHECK_EVERY_MS = 500
KEYS = [f"api.hits#k{index}" for index in range(6)]

LOSSY = FaultOptions(
    drop_probability=0.3,
    duplicate_probability=0.1,
    reorder_probability=0.3,
    reorder_delay_ms_max=150,
    delay_ms_min=1,
    delay_ms_max=20,
)


@dataclass(frozen=True)
class Plan:
    """What happens to the cluster, and when (milliseconds of simulated time)."""

    node_count: int
    partition: str
    partition_at_ms: int
    heal_at_ms: int
    crash: str
    victim: str
    crash_at_ms: int
    restart_at_ms: int

    @classmethod
    def draw(cls, seed: int) -> Plan:
        """A plan drawn from ``seed``."""
        rng = random.Random(seed * 7_919 + 1)
        node_count = rng.randint(3, 5)
        partition_at_ms = rng.randrange(300, 2_000, STEP_MS)
        crash_at_ms = rng.randrange(500, 3_500, STEP_MS)
        crashes = ["disk", "no_disk", "forever"] if node_count >= 4 else ["disk", "no_disk"]
        return cls(
            node_count=node_count,
            partition=rng.choice(["halves", "isolate", "none"]),
            partition_at_ms=partition_at_ms,
            heal_at_ms=partition_at_ms + rng.randrange(500, 2_500, STEP_MS),
            crash=rng.choice(crashes),
            victim=f"n{rng.randrange(node_count)}",
            crash_at_ms=crash_at_ms,
            restart_at_ms=crash_at_ms + rng.randrange(200, 2_500, STEP_MS),
        )


def _apply_events(cluster: Cluster, plan: Plan) -> None:
    now_ms = cluster.now_ms
    node_ids = sorted(cluster.nodes)
    if now_ms == plan.partition_at_ms and plan.partition == "halves":
        half = len(node_ids) // 2
        cluster.network.set_faults(LOSSY.partitioned(node_ids[:half], node_ids[half:]))
        cluster.events["partitions"] += 1
    elif now_ms == plan.partition_at_ms and plan.partition == "isolate":
        cluster.network.set_faults(LOSSY.isolated(node_ids[-1]))
        cluster.events["partitions"] += 1
    if now_ms == plan.heal_at_ms:
        cluster.network.set_faults(LOSSY.healed())
        cluster.events["heals"] += 1
    if now_ms == plan.crash_at_ms:
        cluster.crash(plan.victim, keep_disk=plan.crash == "disk")
    if now_ms == plan.restart_at_ms and plan.crash != "forever":
        cluster.start(plan.victim)
        cluster.events["restarts"] += 1


def run_scenario(
    seed: int,
    *,
    cluster_type: type[Cluster] = Cluster,
    adjust: Callable[[Plan], Plan] | None = None,
) -> tuple[Cluster, Plan, bool]:
    """Run ingest under faults, then a quiet period; True when it converged and went final."""
    plan = Plan.draw(seed)
    if adjust is not None:
        plan = adjust(plan)
    cluster = cluster_type(seed, plan.node_count, LOSSY)
    ingest = random.Random(seed * 104_729 + 3)
    while cluster.now_ms < INGEST_UNTIL_MS:
        cluster.step(STEP_MS)
        _apply_events(cluster, plan)
        running = [node.node_id for node in cluster.running_nodes()]
        if ingest.random() < 0.7:
            cluster.ingest(ingest.choice(running), ingest.choice(KEYS), ingest.randint(1, 5))
    while cluster.now_ms < QUIET_DEADLINE_MS:
        cluster.step(STEP_MS)
        _apply_events(cluster, plan)
        settled = cluster.now_ms > max(plan.heal_at_ms, plan.restart_at_ms)
        checking = settled and cluster.now_ms % CHECK_EVERY_MS == 0
        if checking and cluster.converged() and cluster.all_final():
            return _checked(cluster, plan, settled=True)
    return _checked(cluster, plan, settled=False)


def _checked(cluster: Cluster, plan: Plan, *, settled: bool) -> tuple[Cluster, Plan, bool]:
    """The network loses, duplicates and reorders but never corrupts: no frame is malformed,
    and the plan's faults all happened."""
    malformed = cluster.stat_total("malformed_received")
    assert malformed == 0, f"seed={cluster.seed} plan={plan}: {malformed} malformed frames"
    expected = {
        "crashes": 1,
        "restarts": 0 if plan.crash == "forever" else 1,
        "disks_lost": 0 if plan.crash == "disk" else 1,
        "partitions": 0 if plan.partition == "none" else 1,
        "heals": 1,
    }
    happened = {name: cluster.events[name] for name in expected}
    assert happened == expected, f"seed={cluster.seed} plan={plan}: faults {happened}"
    return cluster, plan, settled
