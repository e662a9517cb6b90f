"""What the local write-ahead log costs: durable against volatile writes, side by side.

Two three-node clusters run in this process on loopback over ZeroMQ, with data directories, one
with ``durability = "fsync"`` and one with ``"none"``, measured alternately (best of
``--phases`` phases each) in the same run:

- ``durable_eventual_writes_per_s`` vs ``volatile_eventual_writes_per_s``: a closed loop of
  eventual writes through :meth:`Node.write` (the path of ``POST /v1/keys``) at
  ``--concurrency`` in flight at one node of the cluster (the three share this process and its
  one thread, as they would not in a deployment: one node's fsyncs are measured, not three
  nodes' fsyncs in a row); every durable write is fsynced before it is answered, one fsync per
  event-loop turn (group commit). Ratio ``durable_writes_vs_volatile``, goal ``>= 0.5``;
- ``statsd_logged_lines_per_s`` vs ``statsd_volatile_lines_per_s``: ``--statsd-lines`` lines of
  the standard statsd mix (``bench/_statsd.py``) applied at one node in batches of 500
  datagrams while the nodes run, the log synced at least every ``statsd_sync_ms`` and before
  anything leaves; the time includes a final sync. Ratio ``statsd_logged_vs_volatile``, goal
  ``>= 0.8``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.report import Report

if TYPE_CHECKING:
    from crdtstream.node import Node

__all__ = ["add_arguments", "run"]

NAMES = ("m1", "m2", "m3")
LEVELS = ("fsync", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sizes of the workload."""
    parser.add_argument("--seconds", type=float, default=3.0, help="write time per level")
    parser.add_argument("--concurrency", type=int, default=32, help="writes in flight")
    parser.add_argument(
        "--statsd-lines", type=int, default=600_000, help="statsd lines per phase and level"
    )
    parser.add_argument(
        "--phases", type=int, default=3, help="alternating phases per level, the best kept"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _build(data_root: Path, durability: str) -> list[Node]:
    from crdtstream.clock import SystemClock
    from crdtstream.config import GossipConfig, MembershipConfig
    from crdtstream.node import Node, NodeConfig, PeerAddress
    from transports.zeromq import ZmqTransport

    addresses = {name: f"tcp://127.0.0.1:{_free_port()}" for name in NAMES}
    peers = tuple(PeerAddress(name, address) for name, address in addresses.items())
    nodes = []
    for index, name in enumerate(NAMES):
        config = NodeConfig(
            node_id=name,
            listen_address=addresses[name],
            peers=tuple(peer for peer in peers if peer.node_id != name),
            gossip=GossipConfig.local(),
            membership=MembershipConfig.local(),
            data_dir=data_root / name,
            durability=durability,
        )
        transport = ZmqTransport(name, addresses[name], config.transport)
        nodes.append(Node(config, transport, SystemClock(), random.Random(index)))
    return nodes


async def _write_rate(node: Node, seconds: float, concurrency: int) -> float:
    """Eventual writes per second at ``node``, ``concurrency`` in flight."""
    count = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal count
        while time.monotonic() < deadline:
            await node.write("ev.durable", "add", 1)
            count += 1
            await asyncio.sleep(0)  # a volatile write never yields on its own

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.monotonic() - started)


async def _statsd_rate(node: Node, datagrams: list[bytes]) -> float:
    """Lines per second applied at ``node`` while it runs, its log synced at the end."""
    from bench._statsd import DATAGRAMS_PER_BATCH

    lines = sum(datagram.count(b"\n") + 1 for datagram in datagrams)
    started = time.monotonic()
    for start in range(0, len(datagrams), DATAGRAMS_PER_BATCH):
        node.ingest_statsd(datagrams[start : start + DATAGRAMS_PER_BATCH])
        await asyncio.sleep(0)  # the node's loop pumps (and syncs) between batches
    node.make_durable()
    return lines / (time.monotonic() - started)


async def _measure(args: argparse.Namespace, report: Report, root: Path) -> None:
    from bench._statsd import statsd_workload

    clusters = {level: _build(root / level, level) for level in LEVELS}
    nodes = [node for level in LEVELS for node in clusters[level]]
    stops = [asyncio.Event() for _ in nodes]
    tasks = [asyncio.create_task(node.run(stop)) for node, stop in zip(nodes, stops, strict=True)]
    writes: dict[str, float] = dict.fromkeys(LEVELS, 0.0)
    statsd: dict[str, float] = dict.fromkeys(LEVELS, 0.0)
    try:
        for phase in range(args.phases):
            for level in LEVELS if phase % 2 == 0 else reversed(LEVELS):
                # One node's group commit, as one agent serves its HTTP writes.
                node = clusters[level][0]
                rate = await _write_rate(node, args.seconds / args.phases, args.concurrency)
                writes[level] = max(writes[level], rate)
                datagrams = statsd_workload(args.statsd_lines, seed=phase)
                statsd[level] = max(statsd[level], await _statsd_rate(node, datagrams))
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    report.add("durable_eventual_writes_per_s", writes["fsync"], "writes/s (fsync before answer)")
    report.add("volatile_eventual_writes_per_s", writes["none"], "writes/s (durability none)")
    report.ratio("durable_writes_vs_volatile", writes["fsync"] / writes["none"], ">= 0.5")
    report.add("statsd_logged_lines_per_s", statsd["fsync"], "lines/s (log synced)")
    report.add("statsd_volatile_lines_per_s", statsd["none"], "lines/s (durability none)")
    report.ratio("statsd_logged_vs_volatile", statsd["fsync"] / statsd["none"], ">= 0.8")


def run(args: argparse.Namespace) -> Report:
    """Run the suite (see the module docstring)."""
    report = Report("durability")
    with tempfile.TemporaryDirectory(prefix="crdtstream-bench-") as root:
        asyncio.run(_measure(args, report, Path(root)))
    return report
