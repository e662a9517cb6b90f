"""One eventual write through the engine against one event added to the store, side by side.

All in this process, with no network (a one-node cluster over the in-memory transport) and a
manual clock, so that only the code path is measured:

- ``store_add``: :meth:`WindowStore.add` of one counter event, the baseline;
- ``engine_single_write``: :meth:`Node.write` of one eventual ``add`` (the path of ``POST
  /v1/keys``) with ``durability = "none"``, so its ticket completes at once;
- ``engine_single_logged_write``: the same with ``durability = "fsync"`` on a
  :class:`~crdtstream.storage.local_log.MemoryDisk`: the write waits for its turn of the event
  loop to end, when the store's change is appended to the local log and synced (a dict, so the
  log's encoding is measured and no disk is).

``--keys N --slices S`` first fill each of the three stores with ``N`` other counter keys in
each of the ``S`` newest slices (a node that retains many keys and windows), so the figures show
how the cost of one write, and of logging it, grows with what the store holds.

Every write is timed on its own (``perf_counter_ns``); p50 and p99 in microseconds. The three
run in alternating rounds (``--rounds`` of ``--writes`` each), so that a busy machine disturbs
all of them alike. Ratios ``engine_single_write_vs_store_add`` (goal ``<= 1.5``: routing,
catalog, ticket and answer cost less than half of the store's own work) and
``engine_single_logged_write_vs_store_add`` compare the p50s. The logged write encodes the
store's delta since the last sync and waits for the loop turn, once per write here (a busy node
shares both among every write of a turn); its goal ``<= 12`` guards the figure first measured
(about 10), it is not a target.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.report import Report
from crdtstream.config import WindowConfig

if TYPE_CHECKING:
    from crdtstream.node import Node
    from crdtstream.window.store import WindowStore

__all__ = ["add_arguments", "run"]

START_MS = 1_700_000_000_000
KEYS = 64
"""Writes cycle over this many keys, as a client writing a handful of metrics does."""

FIGURES = ("store_add", "engine_single_write", "engine_single_logged_write")
RETENTION_WINDOWS = WindowConfig().retention_windows
"""Windows a store retains by default."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sizes of the workload."""
    parser.add_argument("--writes", type=int, default=5_000, help="writes per figure and round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument(
        "--keys", type=int, default=0, help="other counter keys retained in every filled slice"
    )
    parser.add_argument(
        "--slices",
        type=int,
        default=1,
        help=f"slices filled with --keys keys (at most {RETENTION_WINDOWS}, the retention)",
    )


def _node(durability: str) -> Node:
    from crdtstream.clock import ManualClock
    from crdtstream.node import Node, NodeConfig
    from crdtstream.storage.local_log import MemoryDisk
    from transports.memory import FaultOptions, MemoryNetwork, memory_address

    config = NodeConfig(
        node_id="bench",
        listen_address=memory_address("bench"),
        snapshot_interval_ms=3_600_000,
        durability=durability,
    )
    transport = MemoryNetwork(1, FaultOptions()).endpoint("bench")
    disk = MemoryDisk() if durability != "none" else None
    return Node(config, transport, ManualClock(START_MS), random.Random(1), disk=disk)


def _fill(store: WindowStore, keys: int, slices: int) -> None:
    """``keys`` counter keys with one event in each of the ``slices`` newest slices, oldest
    slice first (so that none is late), one batch per slice."""
    if keys <= 0:
        return
    names = [f"bench.retained.{index}" for index in range(keys)]
    index = np.arange(keys, dtype=np.int64)
    size_ms = store.config.size_ms
    for back in range(slices - 1, -1, -1):
        stamps = np.full(keys, START_MS - back * size_ms, dtype=np.int64)
        store.ingest("counter", names, index, np.ones(keys), stamps)


def _store_adds(count: int, keys: int, slices: int) -> Callable[[list[int]], None]:
    from crdtstream.window.store import WindowStore

    store = WindowStore("bench~0001")
    _fill(store, keys, slices)
    names = [f"bench.hits.{index}" for index in range(KEYS)]

    def measure(samples: list[int]) -> None:
        clock = time.perf_counter_ns
        for index in range(count):
            key = names[index % KEYS]
            start = clock()
            store.add(key, "counter", 1.0, START_MS)
            samples.append(clock() - start)

    return measure


def _node_writes(node: Node, count: int) -> Callable[[list[int]], Coroutine[Any, Any, None]]:
    names = [f"bench.hits.{index}" for index in range(KEYS)]

    async def measure(samples: list[int]) -> None:
        clock = time.perf_counter_ns
        for index in range(count):
            key = names[index % KEYS]
            start = clock()
            await node.write(key, "add", 1)
            samples.append(clock() - start)

    return measure


async def _rounds(args: argparse.Namespace) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {name: [] for name in FIGURES}
    volatile, logged = _node("none"), _node("fsync")
    try:
        for node in (volatile, logged):
            _fill(node.engine.store, args.keys, args.slices)
            node.make_durable()  # the filling is logged before the first timed write
        store_adds = _store_adds(args.writes, args.keys, args.slices)
        volatile_writes = _node_writes(volatile, args.writes)
        logged_writes = _node_writes(logged, args.writes)
        for _ in range(args.rounds):
            store_adds(samples["store_add"])
            await volatile_writes(samples["engine_single_write"])
            await logged_writes(samples["engine_single_logged_write"])
        if logged.engine.writes_awaiting_log:
            raise RuntimeError("a logged write was answered before the log held it")
    finally:
        volatile.close(leave=False)
        logged.close(leave=False)
    return samples


def run(args: argparse.Namespace) -> Report:
    """Measure the three figures in alternating rounds and report p50/p99 and the ratios."""
    report = Report("engine")
    if not 1 <= args.slices <= RETENTION_WINDOWS:
        raise SystemExit(
            f"bench engine: --slices must be 1 to {RETENTION_WINDOWS}, got {args.slices}"
        )
    report.parameters = {
        "writes": args.writes,
        "rounds": args.rounds,
        "keys": KEYS,
        "retained_keys": args.keys,
        "retained_slices": args.slices,
    }
    samples = asyncio.run(_rounds(args))
    p50: dict[str, float] = {}
    for name in FIGURES:
        micros = np.asarray(samples[name], dtype=np.float64) / 1_000.0
        p50[name] = float(np.percentile(micros, 50))
        report.add(f"{name}_us_p50", p50[name], "µs")
        report.add(f"{name}_us_p99", float(np.percentile(micros, 99)), "µs")
    base = p50["store_add"]
    report.ratio("engine_single_write_vs_store_add", p50["engine_single_write"] / base, "<= 1.5")
    report.ratio(
        "engine_single_logged_write_vs_store_add",
        p50["engine_single_logged_write"] / base,
        "<= 12",
    )
    return report
