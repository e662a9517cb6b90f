"""The three consistency modes side by side: what each costs and what each promises.

Three nodes run in this process on loopback over ZeroMQ, all of them Raft voters, with keys
``ev.*`` eventual, ``qu.*`` quorum and ``st.*`` strong. Every figure is measured for each mode in
the same run, on the same cluster, the eventual mode being the baseline:

- ``{mode}_writes_per_s`` and ``{mode}_write_ms_p50`` / ``_p99``: a closed loop of
  ``--concurrency`` coroutines spread over the three nodes, each awaiting its write (a counter
  add) back to back for ``--seconds``. An eventual write is acknowledged once applied locally, a
  quorum write once a majority of nodes merged it, a strong write once Raft committed and
  applied it (the voters keep their log in memory here: no fsync, so the figure is the
  protocol's cost, not the disk's; ``crdtstream bench raft`` measures durable writes).
- ``{mode}_reads_per_s``: the same closed loop of reads: local for eventual, merged from a
  majority for quorum, ReadIndex for strong.
- ``{mode}_stale_read_fraction``: ``--trials`` times, a write acknowledged at one node is read
  at once at another node in the same mode; the fraction of reads that miss it. Quorum and
  strong must never miss one (goal ``<= 0``); eventual may, until gossip spreads the write.
- ``{mode}_available_on_minority``: one node is cut off (its two peers stop without leaving,
  so to it they are still members, as behind a partition); the fraction of ``--trials``
  concurrent writes at that node acknowledged within ``--minority-timeout-ms``. Eventual
  stays available (goal ``>= 1``); quorum and strong must refuse rather than pretend (goal
  ``<= 0``).

Ratios against the eventual baseline: ``quorum_writes_vs_eventual`` and
``strong_writes_vs_eventual`` (what a majority round trip costs; goal ``>= 0.05``, a floor that
only a pathological regression misses), and likewise for reads.

What the local write-ahead log costs, on two more three-node clusters with data directories,
one with ``durability = "fsync"`` and one with ``"none"``, measured alternately (best of three
phases each) in the same run:

- ``durable_eventual_writes_per_s`` vs ``volatile_eventual_writes_per_s``: the same closed
  loop of eventual writes through :meth:`Node.write` (the path of ``POST /v1/keys``) at
  ``--concurrency`` in flight at one node of the cluster (the three share this process and
  its one thread, as they would not in a deployment: one node's fsyncs are measured, not three
  nodes' fsyncs in a row); every durable write is fsynced before it is answered, one
  fsync per event-loop turn (group commit). Ratio ``durable_writes_vs_volatile``, goal
  ``>= 0.5``;
- ``statsd_logged_lines_per_s`` vs ``statsd_volatile_lines_per_s``: ``--statsd-lines`` lines
  of the standard statsd mix (``bench/_statsd.py``) applied at one node in batches of 500
  datagrams while the nodes run, the log synced at least every ``statsd_sync_ms`` and before
  anything leaves; the time includes a final sync. Ratio ``statsd_logged_vs_volatile``, goal
  ``>= 0.8``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.report import Report

if TYPE_CHECKING:
    from crdtstream.node import Node

__all__ = ["add_arguments", "run"]

MODES = ("eventual", "quorum", "strong")
PREFIX = {"eventual": "ev", "quorum": "qu", "strong": "st"}
NAMES = ("m1", "m2", "m3")
PHASES = 3
"""Durability phases per level, alternating, best kept: the machine's other load hits both."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sizes of the workload."""
    parser.add_argument("--seconds", type=float, default=3.0, help="each closed-loop phase")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--trials", type=int, default=50, help="stale-read and partition trials")
    parser.add_argument(
        "--minority-timeout-ms",
        type=int,
        default=500,
        help="quorum and strong deadline when cut off",
    )
    parser.add_argument(
        "--statsd-lines", type=int, default=600_000, help="statsd lines per durability phase"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _build(timeout_ms: int, data_root: Path | None = None, durability: str = "fsync") -> list[Node]:
    from crdtstream.clock import SystemClock
    from crdtstream.config import GossipConfig, MembershipConfig, PolicyRule
    from crdtstream.node import Node, NodeConfig, PeerAddress
    from transports.zeromq import ZmqTransport

    addresses = {name: f"tcp://127.0.0.1:{_free_port()}" for name in NAMES}
    voters = tuple(PeerAddress(name, address) for name, address in addresses.items())
    if data_root is not None:
        voters = ()  # eventual writes only: no Raft log on disk to confound the figures
    nodes = []
    for index, name in enumerate(NAMES):
        config = NodeConfig(
            node_id=name,
            listen_address=addresses[name],
            peers=tuple(peer for peer in voters if peer.node_id != name),
            gossip=GossipConfig.local(),
            membership=MembershipConfig.local(),
            raft_voters=voters,
            policy=(PolicyRule("qu.*", "quorum"), PolicyRule("st.*", "strong")),
            strong_timeout_ms=timeout_ms,
            quorum_timeout_ms=timeout_ms,
            data_dir=None if data_root is None else data_root / name,
            durability=durability,
        )
        transport = ZmqTransport(name, addresses[name], config.transport)
        nodes.append(Node(config, transport, SystemClock(), random.Random(index)))
    return nodes


async def _write(node: Node, key: str) -> None:
    """A counter add; the key's prefix decides its mode, through the node's one write API."""
    await node.write(key, "add", 1)


async def _read(node: Node, key: str) -> float:
    answer = await node.read(key)
    return float(sum(window.value for window in answer.windows))  # type: ignore[misc]


async def _closed_loop(
    nodes: list[Node], seconds: float, concurrency: int, operation: Callable[[Node], Awaitable[Any]]
) -> tuple[float, list[float]]:
    """Operations per second and each one's latency in ms, ``concurrency`` at a time."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker(index: int) -> None:
        node = nodes[index % len(nodes)]
        while time.monotonic() < deadline:
            started = time.monotonic()
            await operation(node)
            latencies.append((time.monotonic() - started) * 1000)
            await asyncio.sleep(0)  # a local write never yields on its own

    started = time.monotonic()
    await asyncio.gather(*(worker(index) for index in range(concurrency)))
    return len(latencies) / (time.monotonic() - started), latencies


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def _wait_for_leader(nodes: list[Node]) -> None:
    from crdtstream.errors import UnavailableError

    deadline = time.monotonic() + 30
    while True:
        try:
            await nodes[0].write("st.warmup", "add", 0)
            return
        except UnavailableError:
            if time.monotonic() > deadline:
                raise


async def _stale_fraction(nodes: list[Node], mode: str, trials: int) -> float:
    stale = 0
    for trial in range(trials):
        key = f"{PREFIX[mode]}.fresh.{trial}"
        writer, reader = nodes[trial % 3], nodes[(trial + 1) % 3]
        await _write(writer, key)
        if await _read(reader, key) < 1:
            stale += 1
    return stale / trials


async def _available_on_minority(
    nodes: list[Node], tasks: list[asyncio.Task[None]], stops: list[asyncio.Event], trials: int
) -> dict[str, float]:
    """m2 and m3 stop without leaving (to m1 it is as if a partition cut them off: they stay
    members, so the cluster is still three); then ``trials`` concurrent writes at m1 in each
    mode."""
    from crdtstream.errors import UnavailableError

    for index in (1, 2):
        nodes[index].close(leave=False)
        stops[index].set()
    await asyncio.gather(*tasks[1:], return_exceptions=True)

    async def attempt(mode: str, trial: int) -> bool:
        try:
            await _write(nodes[0], f"{PREFIX[mode]}.cut.{trial}")
        except UnavailableError:
            return False
        return True

    available: dict[str, float] = {}
    for mode in MODES:
        outcomes = await asyncio.gather(*(attempt(mode, trial) for trial in range(trials)))
        available[mode] = sum(outcomes) / trials
    return available


async def _measure(args: argparse.Namespace, report: Report) -> None:
    nodes = _build(args.minority_timeout_ms)
    stops = [asyncio.Event() for _ in nodes]
    tasks = [asyncio.create_task(node.run(stop)) for node, stop in zip(nodes, stops, strict=True)]
    try:
        await _wait_for_leader(nodes)
        writes: dict[str, float] = {}
        reads: dict[str, float] = {}
        for mode in MODES:
            key = f"{PREFIX[mode]}.load"
            rate, latencies = await _closed_loop(
                nodes,
                args.seconds,
                args.concurrency,
                functools.partial(_write, key=key),
            )
            writes[mode] = rate
            report.add(f"{mode}_writes_per_s", rate, "writes/s (closed loop, 3 nodes)")
            report.add(f"{mode}_write_ms_p50", _percentile(latencies, 0.5), "ms")
            report.add(f"{mode}_write_ms_p99", _percentile(latencies, 0.99), "ms")
        for mode in MODES:
            key = f"{PREFIX[mode]}.load"
            rate, _ = await _closed_loop(
                nodes, args.seconds, args.concurrency, functools.partial(_read, key=key)
            )
            reads[mode] = rate
            report.add(f"{mode}_reads_per_s", rate, "reads/s (closed loop, 3 nodes)")
        stale = {mode: await _stale_fraction(nodes, mode, args.trials) for mode in MODES}
        for mode in MODES:
            report.add(f"{mode}_stale_read_fraction", stale[mode], "of reads right after a write")
        available = await _available_on_minority(nodes, tasks, stops, args.trials)
        for mode in MODES:
            report.add(f"{mode}_available_on_minority", available[mode], "of writes acknowledged")
        for mode in ("quorum", "strong"):
            report.ratio(f"{mode}_writes_vs_eventual", writes[mode] / writes["eventual"], ">= 0.05")
            report.ratio(f"{mode}_reads_vs_eventual", reads[mode] / reads["eventual"], ">= 0.05")
            report.ratio(f"{mode}_stale_read_fraction", stale[mode], "<= 0")
            report.ratio(f"{mode}_available_on_minority", available[mode], "<= 0")
        report.ratio("eventual_available_on_minority", available["eventual"], ">= 1")
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


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


async def _measure_durability(args: argparse.Namespace, report: Report, root: Path) -> None:
    from bench._statsd import statsd_workload

    levels = ("fsync", "none")
    clusters = {level: _build(args.minority_timeout_ms, root / level, level) for level in levels}
    stops = [asyncio.Event() for _ in range(6)]
    nodes = [node for level in levels for node in clusters[level]]
    tasks = [asyncio.create_task(node.run(stop)) for node, stop in zip(nodes, stops, strict=True)]
    writes: dict[str, float] = dict.fromkeys(levels, 0.0)
    statsd: dict[str, float] = dict.fromkeys(levels, 0.0)
    try:
        for phase in range(PHASES):
            for level in levels if phase % 2 == 0 else reversed(levels):
                rate, _ = await _closed_loop(
                    clusters[level][:1],  # one node's group commit, as one agent serves HTTP
                    args.seconds / PHASES,
                    args.concurrency,
                    lambda node: _write(node, "ev.durable"),
                )
                writes[level] = max(writes[level], rate)
                datagrams = statsd_workload(args.statsd_lines, seed=phase)
                statsd[level] = max(
                    statsd[level], await _statsd_rate(clusters[level][0], datagrams)
                )
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
    report = Report("modes")
    asyncio.run(_measure(args, report))
    with tempfile.TemporaryDirectory(prefix="crdtstream-bench-") as root:
        asyncio.run(_measure_durability(args, report, Path(root)))
    return report
