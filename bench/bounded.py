"""Bounded quotas beside eventual ones: the limit's overshoot, availability on a minority, and
what a write costs.

Three nodes run the real driver on the simulated network (one manual clock, each packet delayed
``--delay-ms`` .. 1.5x that, as between regions), with keys ``bd.*`` bounded (``--limit`` per
window, split over the three) and ``ev.*`` eventual. The eventual quota is the best an eventual
key can do: a node adds only while its own view of the total is under the limit.

- ``bounded_write_ms_p50`` / ``_p99`` and ``eventual_write_ms_p50`` / ``_p99``: simulated time
  from a write to its answer, under skewed demand (half of it at one node) that exhausts the
  quota: a bounded write answers at once while the node holds rights, after a transfer (one
  round trip) when it does not; ``bounded_answered_locally`` is the fraction of acknowledged
  bounded writes answered at once.
- ``bounded_quota_overshoot`` and ``eventual_quota_overshoot``: units acknowledged beyond the
  limit, in a window where the nodes are split (one alone, two together) and all of them write
  far more than the limit; the bounded one must be 0 (goal ``<= 0``).
- ``bounded_available_on_minority``: the fraction of the lone node's writes acknowledged, of
  those its share of rights covers (goal ``>= 1``).
- ``bounded_local_write_us`` and ``eventual_write_us``: wall-clock cost of one engine write on
  this machine, a consumption within rights against an eventual add, run side by side;
  ``bounded_vs_eventual_write_cost`` is their ratio.
- ``bounded_round_us_few_keys`` and ``bounded_round_us_many_keys``: wall-clock cost of one
  gossip round of a node's bounded core holding ``--keys-few`` and ``--keys-many`` quota keys
  (one window each), with the same 100 keys consumed from per round, run in alternating rounds;
  ``bounded_round_many_vs_few_keys`` is their ratio (goal ``<= 2``: a round costs what
  changed, not every key kept).
"""

from __future__ import annotations

import argparse
import random
import time
from typing import TYPE_CHECKING

from bench.report import Report
from crdtstream.engine.bounded_mode import share_of

if TYPE_CHECKING:
    from crdtstream.clock import ManualClock
    from crdtstream.engine import Ticket
    from crdtstream.node import Node
    from transports.memory import MemoryNetwork

__all__ = ["add_arguments", "run"]

NAMES = ("a", "b", "c")
STEP_MS = 10
WINDOW_MS = 60_000
DEMAND_SHARE = {"a": 0.5, "b": 0.3, "c": 0.2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sizes of the workload."""
    parser.add_argument("--limit", type=int, default=300, help="bounded units per window")
    parser.add_argument("--delay-ms", type=int, default=40, help="one-way network delay")
    parser.add_argument("--seconds", type=float, default=5.0, help="simulated load phase")
    parser.add_argument("--rate", type=int, default=100, help="writes per simulated second")
    parser.add_argument("--cost-writes", type=int, default=20_000, help="writes timed for cost")
    parser.add_argument("--keys-few", type=int, default=1_000, help="keys, round cost baseline")
    parser.add_argument("--keys-many", type=int, default=50_000, help="keys, round cost figure")
    parser.add_argument("--seed", type=int, default=1)


class _Cluster:
    def __init__(self, args: argparse.Namespace) -> None:
        from crdtstream.clock import ManualClock
        from crdtstream.config import GossipConfig, MembershipConfig, PolicyRule
        from crdtstream.node import Node, NodeConfig, PeerAddress
        from transports.memory import FaultOptions, MemoryNetwork, memory_address

        self.rng = random.Random(args.seed)
        self.clock: ManualClock = ManualClock(WINDOW_MS * 100)
        self.faults = FaultOptions(delay_ms_min=args.delay_ms, delay_ms_max=args.delay_ms * 3 // 2)
        self.network: MemoryNetwork = MemoryNetwork(args.seed, self.faults)
        self.rule = PolicyRule(
            "bd.*", "bounded", limit=args.limit, window_ms=WINDOW_MS, members=NAMES
        )
        policy = (self.rule,)
        self.nodes: dict[str, Node] = {}
        for name in NAMES:
            config = NodeConfig(
                node_id=name,
                listen_address=memory_address(name),
                peers=tuple(
                    PeerAddress(other, memory_address(other)) for other in NAMES if other != name
                ),
                gossip=GossipConfig(interval_ms=100, fanout=2),
                membership=MembershipConfig.local(),
                tick_interval_ms=STEP_MS,
                policy=policy,
            )
            self.nodes[name] = Node(
                config,
                self.network.endpoint(name),
                self.clock,
                random.Random(self.rng.getrandbits(64)),
            )

    def step(self) -> None:
        self.clock.advance(STEP_MS)
        self.network.advance(STEP_MS)
        for node in self.nodes.values():
            node.pump()

    def to_next_window(self) -> None:
        while self.clock.now_ms() % WINDOW_MS:
            self.step()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def _eventual_total(node: Node, key: str) -> float:
    windows = node.engine.read(key).result().windows
    return float(sum(float(str(window.value)) for window in windows))


def _load(
    cluster: _Cluster, args: argparse.Namespace, key: str, eventual_key: str
) -> dict[str, list[float]]:
    """Skewed demand for ``--seconds``: latencies of each side, in simulated ms."""
    latencies: dict[str, list[float]] = {"bounded": [], "eventual": []}
    pending: list[tuple[Ticket, int]] = []
    names = list(DEMAND_SHARE)
    weights = [DEMAND_SHARE[name] for name in names]
    per_step = args.rate * STEP_MS / 1000
    for _ in range(int(args.seconds * 1000 / STEP_MS)):
        for _ in range(_poisson(cluster.rng, per_step)):
            node = cluster.nodes[cluster.rng.choices(names, weights)[0]]
            started = cluster.clock.now_ms()
            pending.append((node.engine.write(key, "consume", 1), started))
            if _eventual_total(node, eventual_key) < args.limit:
                node.engine.write(eventual_key, "add", 1).result()
            latencies["eventual"].append(float(cluster.clock.now_ms() - started))
        still = []
        for ticket, issued_ms in pending:
            if ticket.done:
                if ticket.error is None:
                    latencies["bounded"].append(float(cluster.clock.now_ms() - issued_ms))
            else:
                still.append((ticket, issued_ms))
        pending = still
        cluster.step()
    return latencies


def _poisson(rng: random.Random, mean: float) -> int:
    count, threshold, product = 0, pow(2.718281828459045, -mean), rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


def _partitioned_overshoot(cluster: _Cluster, args: argparse.Namespace) -> tuple[int, float, float]:
    """Split {c} from {a, b}; everyone writes 2x the limit. Returns the bounded overshoot,
    the eventual overshoot and the fraction of c's covered writes acknowledged."""
    cluster.to_next_window()
    key, eventual_key = "bd.split", "ev.split"
    cluster.network.set_faults(cluster.faults.partitioned({"a", "b"}, {"c"}))
    tickets: dict[str, list[Ticket]] = {name: [] for name in NAMES}
    eventual_acked = 0
    for _ in range(2 * args.limit // len(NAMES)):
        for name, node in cluster.nodes.items():
            tickets[name].append(node.engine.write(key, "consume", 1))
            if _eventual_total(node, eventual_key) < args.limit:
                node.engine.write(eventual_key, "add", 1).result()
                eventual_acked += 1
        cluster.step()
    for _ in range(3_000 // STEP_MS):
        cluster.step()
    acked = {name: sum(t.done and t.error is None for t in ts) for name, ts in tickets.items()}
    share_c = share_of(cluster.rule, "c")
    covered = min(share_c, len(tickets["c"]))
    available = min(acked["c"], covered) / covered if covered else 1.0
    cluster.network.set_faults(cluster.faults)
    return (
        max(0, sum(acked.values()) - args.limit),
        float(max(0, eventual_acked - args.limit)),
        available,
    )


def _write_cost_us(cluster: _Cluster, writes: int) -> tuple[float, float]:
    """Wall-clock µs per engine write: a consumption within rights, and an eventual add."""
    cluster.to_next_window()
    engine = cluster.nodes["a"].engine
    bounded = eventual = 0.0
    chunk = share_of(cluster.rule, "a")
    for _ in range(max(1, writes // chunk)):
        # A fresh key per chunk of a's share keeps every consumption local (its window's state
        # is made on the first one); alternate so both sides see the same machine.
        key = f"bd.cost.{cluster.rng.getrandbits(32)}"
        start = time.perf_counter()
        for _ in range(chunk):
            engine.write(key, "consume", 1)
        bounded += time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(chunk):
            engine.write("ev.cost", "add", 1)
        eventual += time.perf_counter() - start
    count = max(1, writes // chunk) * chunk
    return bounded / count * 1e6, eventual / count * 1e6


ROUND_WRITES = 100
"""Keys consumed from per measured round."""


def _round_cost_us(key_counts: tuple[int, ...], rounds: int = 20) -> list[float]:
    """Wall-clock µs per gossip round of a bounded core holding each count of keys, with
    :data:`ROUND_WRITES` consumptions per round (not timed) and the rounds alternated between
    the cores, after the rounds in which every window is new (all of them are sent then)."""
    from crdtstream.config import PolicyRule
    from crdtstream.engine.bounded_mode import RECENT_ROUNDS, BoundedKeys
    from crdtstream.engine.tickets import Ticket

    rule = PolicyRule("q.*", "bounded", limit=10**9, window_ms=3_600_000, members=NAMES)
    now_ms = rule.window_ms
    cores = []
    for count in key_counts:
        core = BoundedKeys(
            "a",
            "a~0",
            random.Random(count),
            lambda peer, frame: None,
            started_ms=0,
            timeout_ms=1_000,
        )
        keys = [f"q.{i}" for i in range(count)]
        for key in keys:
            core.write(Ticket(), key, rule, "consume", 1, None, now_ms, 0)
        cores.append((core, keys[:ROUND_WRITES]))
    spent = [0.0] * len(cores)
    for number in range(RECENT_ROUNDS + 2 + rounds):
        for index, (core, hot) in enumerate(cores):
            for key in hot:
                core.write(Ticket(), key, rule, "consume", 1, None, now_ms, number)
            start = time.perf_counter()
            core.tick(now_ms, number, ("b", "c"), gossip_round=True)
            if number >= RECENT_ROUNDS + 2:
                spent[index] += time.perf_counter() - start
    return [total / rounds * 1e6 for total in spent]


def run(args: argparse.Namespace) -> Report:
    """Run the suite."""
    report = Report("bounded")
    cluster = _Cluster(args)
    for _ in range(1_000 // STEP_MS):
        cluster.step()  # members meet
    cluster.to_next_window()
    latencies = _load(cluster, args, "bd.load", "ev.load")
    for side in ("bounded", "eventual"):
        report.add(f"{side}_write_ms_p50", _percentile(latencies[side], 0.5), "ms")
        report.add(f"{side}_write_ms_p99", _percentile(latencies[side], 0.99), "ms")
    report.add("bounded_writes_acknowledged", len(latencies["bounded"]), "writes")
    local = sum(latency == 0 for latency in latencies["bounded"])
    report.add("bounded_answered_locally", local / max(1, len(latencies["bounded"])), "fraction")
    bounded_overshoot, eventual_overshoot, available = _partitioned_overshoot(cluster, args)
    report.add("eventual_quota_overshoot", eventual_overshoot, "units")
    report.ratio("bounded_quota_overshoot", bounded_overshoot, "<= 0")
    report.ratio("bounded_available_on_minority", available, ">= 1")
    bounded_us, eventual_us = _write_cost_us(cluster, args.cost_writes)
    report.add("bounded_local_write_us", bounded_us, "us")
    report.add("eventual_write_us", eventual_us, "us")
    report.ratio("bounded_vs_eventual_write_cost", bounded_us / eventual_us, "<= 5")
    few_us, many_us = _round_cost_us((args.keys_few, args.keys_many))
    report.add("bounded_round_us_few_keys", few_us, "us")
    report.add("bounded_round_us_many_keys", many_us, "us")
    report.ratio("bounded_round_many_vs_few_keys", many_us / few_us, "<= 2")
    return report
