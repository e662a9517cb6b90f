"""Metrics: the cost of one ``/metrics`` scrape as the number of keys grows.

A node on the simulated network (manual clock, one-second windows) takes ``--keys`` counters
with two tags and a tenth as many distributions for three windows, which then go final. One
scrape is timed in two parts: building the metric families (folding final windows, naming,
labels, collision checks: our work) and encoding them (prometheus_client's text encoder: the
library's work). The ratio of the two, measured in the same run, says how much the exporter
adds to what any client library must spend on the same series; goal <= 1.5.
"""

from __future__ import annotations

import argparse
import random
import time

from bench.report import Report, best_of
from crdtstream.agent.aggregates import RunningAggregates, node_window_source
from crdtstream.agent.metrics import MetricsExporter, encode, node_self_metrics
from crdtstream.clock import ManualClock
from crdtstream.config import WindowConfig
from crdtstream.node import Node, NodeConfig
from transports.memory import FaultOptions, MemoryNetwork

START_MS = 1_700_000_000_000
STEP_MS = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crdtstream bench metrics``."""
    parser.add_argument("--keys", type=int, default=10_000, help="counter keys (default 10000)")
    parser.add_argument("--repeats", type=int, default=5, help="scrapes; the best is kept (5)")


def _loaded_exporter(keys: int) -> MetricsExporter:
    clock = ManualClock(START_MS)
    network = MemoryNetwork(1, FaultOptions())
    window = WindowConfig(size_ms=1_000, allowed_lateness_ms=0, retention_windows=3)
    config = NodeConfig(node_id="solo", listen_address="solo", window=window)
    node = Node(config, network.endpoint("solo"), clock, random.Random(1))
    aggregates = RunningAggregates(node_window_source(node))
    counters = b"\n".join(b"app.k%d:1|c|#env:prod,shard:%d" % (i, i % 7) for i in range(keys))
    timers = b"\n".join(b"lat.k%d:%d|ms" % (i, i % 100) for i in range(max(1, keys // 10)))
    for step in range(50):
        if step < 30 and step % 10 == 0:
            node.ingest_statsd([counters, timers])
        clock.advance(STEP_MS)
        network.advance(STEP_MS)
        node.pump()
        aggregates.fold(clock.now_ms())
    return MetricsExporter(node_self_metrics(node), aggregates, clock.now_ms)


def run(args: argparse.Namespace) -> Report:
    """Time the two halves of a scrape and return the report."""
    exporter = _loaded_exporter(max(1, args.keys))
    repeats = max(1, args.repeats)
    families = exporter.families()
    build_s = best_of(repeats, exporter.families)
    encode_s = best_of(repeats, lambda: encode(families, ""))
    started = time.perf_counter()
    body, _ = exporter.exposition("")
    scrape_s = time.perf_counter() - started
    report = Report("metrics")
    report.add("keys_exported", len(exporter.aggregates.aggregates), "keys")
    report.add("exposition_bytes", len(body), "B")
    report.add("scrape", scrape_s * 1e3, "ms")
    report.add("families_build", build_s * 1e3, "ms")
    report.add("encode_prometheus_client", encode_s * 1e3, "ms")
    report.ratio("families_build_over_encode", build_s / encode_s, "<= 1.5")
    return report
