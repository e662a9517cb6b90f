"""Gossip: rounds to converge at N = 10, 100, 1,000 and δ-interval bytes against full-state push.

Both workloads run the real anti-entropy core (:class:`crdtstream.gossip.antientropy.AntiEntropy`)
and the real codec on every message, round by round: in each round every node ticks once and
every message (and its ack) is delivered or, with ``loss``, dropped. The membership layer is not
simulated here: every node knows every other (a converged member table), so the figures are
those of dissemination alone. The lattice is the cheap reference lattice
(:class:`crdtstream.gossip.reference.SlotCounters`), which keeps a thousand nodes in one process.

- ``rounds_nN`` (0 % loss) and ``rounds_nN_loss10``: rounds from the last write of a burst
  (writes on 1 % of the nodes, at least one) until every node holds the same state.
  ``rounds_vs_log2n_n1000`` = rounds_n1000 / log2(1000); goal <= 2.
- ``delta_vs_full_bytes``: bytes on the wire per ingested event with δ-interval anti-entropy
  versus a naive push of the full state to the same number of random peers per round, on the
  same events (each round 1 % of the keys change), measured side by side until every node
  holds every event (and, for δ-interval, until its traffic stops); goal <= 0.1.
  ``--bytes-nodes`` sets the cluster size of this workload (default 10).
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable

from bench.report import Report
from crdtstream import wire
from crdtstream.config import GossipConfig
from crdtstream.gossip.antientropy import AntiEntropy
from crdtstream.gossip.messages import DeltaPart, Message, decode_frame, encode_frame
from crdtstream.gossip.reference import SlotCounters, decode_slot_delta

__all__ = ["add_arguments", "run"]

CONFIG = GossipConfig(interval_ms=200, fanout=3)
WINDOW_MS = 10_000
ROUNDS_MAX = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crdtstream bench gossip``."""
    parser.add_argument("--sizes", default="10,100,1000", help="cluster sizes, comma separated")
    parser.add_argument("--trials", type=int, default=3, help="bursts averaged per size < 1000")
    parser.add_argument("--keys", type=int, default=5_000, help="keys in the bytes workload")
    parser.add_argument("--bytes-nodes", type=int, default=10, help="nodes in the bytes workload")
    parser.add_argument("--bytes-rounds", type=int, default=10, help="measured rounds of churn")
    parser.add_argument("--seed", type=int, default=1)


class _Node:
    def __init__(self, index: int, rng: random.Random) -> None:
        self.node_id = f"n{index}"
        self.lattice = SlotCounters(f"{self.node_id}~0", WINDOW_MS, 0)
        self.sync = AntiEntropy(
            self.lattice,
            decode_slot_delta,
            CONFIG,
            rng,
            CONFIG.chunk_bytes_max - 2048,
            node_id=self.node_id,
        )


class _Cluster:
    """Nodes that all know each other; a round ticks each once and delivers what it sends."""

    def __init__(self, size: int, loss: float, rng: random.Random) -> None:
        self.nodes = {f"n{i}": _Node(i, random.Random(rng.getrandbits(64))) for i in range(size)}
        self.peers = {name: [p for p in self.nodes if p != name] for name in self.nodes}
        self.loss = loss
        self.rng = rng
        self.now_ms = 0
        self.wire_bytes = 0

    def round(self) -> None:
        self.now_ms += CONFIG.interval_ms
        queue: list[tuple[str, Message]] = []
        for name, node in self.nodes.items():
            queue.extend((name, m) for m in node.sync.tick(self.now_ms, self.peers[name]))
        while queue:
            source, message = queue.pop()
            payload = encode_frame(message.tag, message.body, [], [])
            self.wire_bytes += len(payload)
            if self.rng.random() < self.loss:
                continue
            frame = decode_frame(payload)
            receiver = self.nodes[message.peer_id]
            replies = receiver.sync.step(source, frame.tag, frame.body)
            queue.extend((message.peer_id, reply) for reply in replies)

    def all_pairs_met(self) -> bool:
        return all(
            node.sync.acknowledged(peer) is not None
            for name, node in self.nodes.items()
            for peer in node.sync.neighbours(self.peers[name])
        )

    def equal(self) -> bool:
        states = iter(self.nodes.values())
        first = next(states).lattice.full_state()
        return all(node.lattice.full_state() == first for node in states)


def rounds_to_converge(size: int, loss: float, seed: int) -> int:
    """Rounds after a burst of writes until all ``size`` nodes are equal."""
    rng = random.Random(seed)
    cluster = _Cluster(size, loss, rng)
    cluster.round()  # every node meets its first peers while the state is empty
    writers = rng.sample(sorted(cluster.nodes), max(1, size // 100))
    for index, name in enumerate(writers):
        cluster.nodes[name].lattice.add(f"key{index}", 1_000, 1 + index)
    for rounds in range(1, ROUNDS_MAX + 1):
        cluster.round()
        if cluster.equal():
            return rounds
    raise RuntimeError(f"no convergence in {ROUNDS_MAX} rounds (size={size}, seed={seed})")


def _churn(nodes: list[_Node], keys: int, rng: random.Random, now_ms: int) -> int:
    """Write to 1 % of the keys, each on a random node; return the number of events."""
    changed = rng.sample(range(keys), max(1, keys // 100))
    for key in changed:
        rng.choice(nodes).lattice.add(f"metric.name#key:{key}", now_ms, 1)
    return len(changed)


def _full_push_round(cluster: _Cluster, rng: random.Random) -> None:
    """The baseline: every node pushes its whole state, chunked, to ``fanout`` random peers."""
    for name, node in cluster.nodes.items():
        for peer in rng.sample(cluster.peers[name], CONFIG.fanout):
            for part in node.lattice.full_state().split(CONFIG.chunk_bytes_max - 2048):
                body = [0, 0, 0, 1, part.to_bytes()]
                payload = encode_frame(wire.Tag.GOSSIP_DELTA, body, [], [])
                cluster.wire_bytes += len(payload)
                received = decode_frame(payload).body
                assert isinstance(received, DeltaPart)
                delta = decode_slot_delta(received.data)
                cluster.nodes[peer].lattice.merge(delta)


def bytes_per_event(
    nodes: int, keys: int, rounds: int, seed: int, step: Callable[[_Cluster], None] | None
) -> float:
    """Wire bytes per event over ``rounds`` rounds of 1 % churn (``step=None``: δ-interval)."""
    rng = random.Random(seed)
    cluster = _Cluster(nodes, 0.0, random.Random(seed + 1))
    members = list(cluster.nodes.values())
    for key in range(keys):
        rng.choice(members).lattice.add(f"metric.name#key:{key}", 1_000, 1)
    run_round = step or _Cluster.round
    # Warm up until everyone holds everything and, for δ-interval, every pair has met once
    # (a first meeting ships the full state, by design).
    for _ in range(ROUNDS_MAX):
        run_round(cluster)
        if cluster.equal() and (step is not None or cluster.all_pairs_met()):
            break
    cluster.wire_bytes = 0
    events = 0
    for index in range(rounds):
        events += _churn(members, keys, rng, 1_000 + index)
        run_round(cluster)
    # Both pay until every node holds every event; δ-interval also until its traffic stops
    # (the acks and intervals still owed count), the baseline pushes forever by design.
    for _ in range(ROUNDS_MAX):
        before = cluster.wire_bytes
        if cluster.equal() and (step is not None or _quiet(cluster)):
            break
        run_round(cluster)
        if step is None and cluster.wire_bytes == before and cluster.equal():
            break
    return cluster.wire_bytes / events


def _quiet(cluster: _Cluster) -> bool:
    return all(node.sync.buffered_groups == 0 for node in cluster.nodes.values())


def run(args: argparse.Namespace) -> Report:
    """Run both workloads and report rounds, bytes and the two ratios."""
    report = Report("gossip")
    sizes = [int(text) for text in str(args.sizes).split(",") if text]
    for size in sizes:
        trials = 1 if size >= 1_000 else args.trials
        for loss, suffix in ((0.0, ""), (0.1, "_loss10")):
            seeds = [args.seed * 1_000 + trial for trial in range(trials)]
            rounds = [rounds_to_converge(size, loss, seed) for seed in seeds]
            mean = sum(rounds) / len(rounds)
            report.add(f"rounds_n{size}{suffix}", mean, "rounds")
            if size == max(sizes) and loss == 0.0:
                report.ratio(f"rounds_vs_log2n_n{size}", mean / math.log2(size), "<= 2")
    full_rng = random.Random(args.seed + 7)
    delta = bytes_per_event(args.bytes_nodes, args.keys, args.bytes_rounds, args.seed, None)
    full = bytes_per_event(
        args.bytes_nodes,
        args.keys,
        args.bytes_rounds,
        args.seed,
        lambda cluster: _full_push_round(cluster, full_rng),
    )
    report.add("delta_bytes_per_event", delta, "B/event")
    report.add("full_state_bytes_per_event", full, "B/event")
    report.ratio("delta_vs_full_bytes", delta / full, "<= 0.1")
    return report
