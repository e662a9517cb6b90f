"""Final windows leave the cluster once: one owner per (key, window), takeover when it dies.

The nodes run the real driver on the simulated network with a manual clock; each node's sink
sends Graphite plaintext over real TCP on loopback to a recording server that counts every
line (carbon keeps one value per series and timestamp, so it cannot witness duplicates; see
test_graphite_carbon.py for the real carbon).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from crdtstream.agent.export import ClusterExporter, points_of, rendezvous_owner
from crdtstream.agent.sinks import GraphiteSink, Point, graphite_line
from tests.node.engine_calls import write
from tests.node.test_node_simulation import Cluster

pytestmark = [pytest.mark.timeout(120)]

SEED = 41
KEYS = [f"api.k{index}#env:prod" for index in range(24)]


class Recorder:
    """A TCP server on loopback that keeps every line it receives."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.server: asyncio.Server | None = None
        self.connections = 0
        self.finished = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        data = await reader.read()
        self.lines += data.decode().splitlines()
        writer.close()
        self.finished += 1

    async def stop(self) -> None:
        """Stop once every connection accepted has been read to its end."""
        assert self.server is not None
        for _ in range(500):
            if self.finished == self.connections:
                break
            await asyncio.sleep(0.01)
        self.server.close()
        await self.server.wait_closed()


async def _run(
    cluster: Cluster, exporters: dict[str, ClusterExporter], ms: int, flush: set[str]
) -> None:
    for step in range(ms // 100):
        cluster.run(100)
        for name, exporter in exporters.items():
            exporter.collect(cluster.clock.now_ms())
            if name in flush and step % 5 == 4:
                await exporter.flush()


async def _scenario() -> None:
    recorder = Recorder()
    port = await recorder.start()
    cluster = Cluster(SEED, ["a", "b", "c"], None)
    exporters = {
        name: ClusterExporter(node, GraphiteSink("127.0.0.1", port))
        for name, node in cluster.nodes.items()
    }
    rng = random.Random(SEED)
    written: set[tuple[str, int]] = set()
    try:
        await _run(cluster, exporters, 2_000, set(exporters))  # the cluster forms
        for second in range(12):
            # From second 6 on, c collects but never flushes; at second 9 it crashes (after
            # gossip spread its writes: a crash loses what was never sent, a different test).
            if second == 9:
                exporters.pop("c")
                cluster.nodes.pop("c").close(leave=False)
            if second == 11:
                # c is gone for good: windows it had not closed wait for it until an operator
                # removes it (a final value never changes), then go final without it.
                assert cluster.nodes["a"].engine.gossip.remove_member("c", cluster.clock.now_ms())
            for key in rng.sample(KEYS, 12):
                name = rng.choice(sorted(cluster.nodes))
                write(cluster.nodes[name], key, "add", 1)
                written.add((key, cluster.clock.now_ms() // 1_000))
            flushing = set(exporters) if second < 6 else {"a", "b"}
            await _run(cluster, exporters, 1_000, flushing)
        await _run(cluster, exporters, 20_000, set(exporters))
        for exporter in exporters.values():
            assert await exporter.flush(), f"seed={SEED}"
    finally:
        await recorder.stop()
    received = Counter(
        (line.split(" ")[0].split(";")[0], int(line.split(" ")[2])) for line in recorder.lines
    )
    duplicates = {point: count for point, count in received.items() if count > 1}
    assert not duplicates, f"seed={SEED}: exported more than once: {duplicates}"
    expected = {(key.partition("#")[0], second) for key, second in written}
    assert set(received) == expected, f"seed={SEED}: missing {expected - set(received)}"
    taken_over = sum(e.counters.keys_taken_over for e in exporters.values())
    assert taken_over > 0, f"seed={SEED}: c owned nothing unflushed; the test proved nothing"


def test_each_final_window_is_exported_once_even_when_an_owner_dies() -> None:
    asyncio.run(_scenario())


def test_rendezvous_owners_move_only_from_a_member_that_goes() -> None:
    members = ["a", "b", "c", "d"]
    before = {key: rendezvous_owner(key, members) for key in KEYS * 4}
    after = {key: rendezvous_owner(key, ["a", "b", "d"]) for key in KEYS * 4}
    moved = {key for key in before if before[key] != after[key]}
    assert moved == {key for key, owner in before.items() if owner == "c"}
    assert len(set(before.values())) > 1


def test_graphite_lines_carry_tags_and_window_time() -> None:
    point = Point("api.hits", {"region": "eu", "env": "prod"}, 5.0, 1_700_000_000, 0)
    assert graphite_line(point) == b"api.hits;env=prod;region=eu 5.0 1700000000\n"
    points = points_of("api.latency", "distribution", _Distribution(), 10_000)
    assert [p.name for p in points][:2] == ["api.latency.count", "api.latency.sum"]


class _Distribution:
    count = 2.0
    total = 3.0
    minimum = 1.0
    maximum = 2.0

    def quantile(self, q: float) -> float:
        return 1.0 + q
