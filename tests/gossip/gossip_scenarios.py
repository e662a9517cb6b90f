"""Randomised fault scenarios for the gossip simulation, each fully determined by its seed.

Crashes: with the data directory ("disk"), without it ("no_disk": a new replica id), twice in
quick succession ("disk_twice", "no_disk_twice": the second life is a few hundred milliseconds
long and takes writes), for good ("forever": an operator removes the node later), or a pause
("pause": SIGSTOP for longer than the failure detector needs to declare the node dead, then
SIGCONT). Finality is polled on every node after every step (``Cluster.watch_finality``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from gossip_simulation import Cluster

from transports.memory import FaultOptions

STEP_MS = 50
PAUSE_MS_MIN = 5_000
"""Longer than the failure detector's longest suspicion timeout in these runs (4.8 s)."""
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
    second_crash_at_ms: int = -1
    second_restart_at_ms: int = -1

    @classmethod
    def draw(cls, seed: int) -> Plan:
        """A plan drawn from ``seed``."""
        rng = random.Random(seed * 7_919 + 1)
        node_count = rng.randint(3, 5)
        partition_at_ms = rng.randrange(300, 2_000, STEP_MS)
        crash_at_ms = rng.randrange(500, 3_500, STEP_MS)
        crashes = ["disk", "no_disk", "disk_twice", "no_disk_twice", "pause"]
        if node_count >= 4:
            crashes.append("forever")
        crash = rng.choice(crashes)
        restart_at_ms = crash_at_ms + rng.randrange(200, 2_500, STEP_MS)
        second_crash_at_ms = second_restart_at_ms = -1
        if crash == "pause":
            restart_at_ms = crash_at_ms + rng.randrange(PAUSE_MS_MIN, PAUSE_MS_MIN + 3_000, STEP_MS)
        elif crash.endswith("_twice"):
            restart_at_ms = crash_at_ms + rng.randrange(200, 800, STEP_MS)
            second_crash_at_ms = restart_at_ms + rng.randrange(100, 500, STEP_MS)
            second_restart_at_ms = second_crash_at_ms + rng.randrange(200, 800, STEP_MS)
        return cls(
            node_count=node_count,
            partition=rng.choice(["halves", "isolate", "none"]),
            partition_at_ms=partition_at_ms,
            heal_at_ms=partition_at_ms + rng.randrange(500, 2_500, STEP_MS),
            crash=crash,
            victim=f"n{rng.randrange(node_count)}",
            crash_at_ms=crash_at_ms,
            restart_at_ms=restart_at_ms,
            second_crash_at_ms=second_crash_at_ms,
            second_restart_at_ms=second_restart_at_ms,
        )

    @property
    def last_event_ms(self) -> int:
        """When the last planned fault ends."""
        return max(self.heal_at_ms, self.restart_at_ms, self.second_restart_at_ms)


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
    keep_disk = plan.crash.startswith("disk")
    if now_ms == plan.crash_at_ms:
        if plan.crash == "pause":
            cluster.pause(plan.victim)
            cluster.events["pauses"] += 1
        else:
            cluster.crash(plan.victim, keep_disk=keep_disk)
    if now_ms == plan.restart_at_ms:
        if plan.crash == "pause":
            cluster.note_pause_verdicts(plan.victim)
            cluster.resume(plan.victim)
        elif plan.crash == "forever":
            cluster.remove(plan.victim)
            cluster.events["removals"] += 1
        else:
            cluster.start(plan.victim)
            cluster.events["restarts"] += 1
    if now_ms == plan.second_crash_at_ms:
        cluster.crash(plan.victim, keep_disk=keep_disk)
    if now_ms == plan.second_restart_at_ms:
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
        cluster.watch_finality()
        running = [node.node_id for node in cluster.running_nodes()]
        if ingest.random() < 0.7:
            cluster.ingest(ingest.choice(running), ingest.choice(KEYS), ingest.randint(1, 5))
    while cluster.now_ms < QUIET_DEADLINE_MS:
        cluster.step(STEP_MS)
        _apply_events(cluster, plan)
        cluster.watch_finality()
        settled = cluster.now_ms > plan.last_event_ms
        checking = settled and cluster.now_ms % CHECK_EVERY_MS == 0
        if checking and cluster.converged() and cluster.all_final():
            return _checked(cluster, plan, settled=True)
    return _checked(cluster, plan, settled=False)


def _checked(cluster: Cluster, plan: Plan, *, settled: bool) -> tuple[Cluster, Plan, bool]:
    """The network loses, duplicates and reorders but never corrupts: no frame is malformed,
    and the plan's faults all happened."""
    malformed = cluster.stat_total("malformed_received")
    assert malformed == 0, f"seed={cluster.seed} plan={plan}: {malformed} malformed frames"
    twice = plan.second_crash_at_ms >= 0  # also a twice plan whose disk a variant keeps
    lives_lost = {"pause": 0, "forever": 1}.get(plan.crash, 2 if twice else 1)
    expected = {
        "crashes": lives_lost,
        "restarts": 0 if plan.crash == "forever" else lives_lost,
        "disks_lost": 0 if plan.crash.startswith("disk") else lives_lost,
        "removals": 1 if plan.crash == "forever" else 0,
        "pauses": 1 if plan.crash == "pause" else 0,
        "partitions": 0 if plan.partition == "none" else 1,
        "heals": 1,
    }
    happened = {name: cluster.events[name] for name in expected}
    assert happened == expected, f"seed={cluster.seed} plan={plan}: faults {happened}"
    return cluster, plan, settled
