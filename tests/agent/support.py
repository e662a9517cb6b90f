"""A single node over the simulated network with a manual clock, and its metrics exporter."""

from __future__ import annotations

import random

from crdtstream.agent.aggregates import RunningAggregates, node_window_source
from crdtstream.agent.metrics import MetricsExporter, node_self_metrics
from crdtstream.clock import ManualClock
from crdtstream.config import WindowConfig
from crdtstream.node import Node, NodeConfig
from transports.memory import FaultOptions, MemoryNetwork

START_MS = 1_700_000_000_000
WINDOW = WindowConfig(size_ms=1_000, allowed_lateness_ms=0, retention_windows=3)


class Solo:
    """One node (no peers, so every window its watermark passed is final) and its exporter."""

    def __init__(self, idle_ttl_ms: int = 600_000, window: WindowConfig = WINDOW) -> None:
        self.clock = ManualClock(START_MS)
        self.network = MemoryNetwork(1, FaultOptions())
        config = NodeConfig(node_id="solo", listen_address="solo", window=window)
        self.node = Node(config, self.network.endpoint("solo"), self.clock, random.Random(1))
        self.aggregates = RunningAggregates(node_window_source(self.node), idle_ttl_ms)
        self.exporter = MetricsExporter(
            node_self_metrics(self.node), self.aggregates, self.clock.now_ms
        )

    def run(self, duration_ms: int, step_ms: int = 100) -> None:
        """Advance the clock by ``duration_ms``, pumping and folding at every step."""
        for _ in range(duration_ms // step_ms):
            self.clock.advance(step_ms)
            self.network.advance(step_ms)
            self.node.pump()
            self.aggregates.fold(self.clock.now_ms())

    def scrape(self, *, provisional: bool = False, accept: str = "") -> str:
        body, _ = self.exporter.exposition(accept, provisional=provisional)
        return body.decode()
