"""A real carbon-cache receives a node's final windows through the Graphite sink.

Needs ``carbon-cache`` (Debian package ``graphite-carbon``; ``.ci/run`` installs it) and reads
the whisper files back with the system Python's ``whisper`` module, which that package brings.
Everything listens on 127.0.0.1 on free ports; carbon is stopped on every exit path.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from crdtstream.agent.export import ClusterExporter
from crdtstream.agent.sinks import GraphiteSink
from crdtstream.clock import SystemClock
from crdtstream.config import WindowConfig
from crdtstream.node import Node, NodeConfig
from transports.zeromq import ZmqTransport

pytestmark = [pytest.mark.timeout(90), pytest.mark.multiprocess]

DEADLINE_S = 40.0
SYSTEM_PYTHON = "/usr/bin/python3"
FETCH = (
    "import json, sys, time, whisper\n"
    "(start, end, step), values = whisper.fetch(sys.argv[1], int(time.time()) - 600)\n"
    "print(json.dumps([[start + i * step, v] for i, v in enumerate(values) if v is not None]))\n"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _carbon_config(root: Path, line_port: int) -> Path:
    for directory in ("storage", "log", "run"):
        (root / directory).mkdir()
    (root / "storage-schemas.conf").write_text("[default]\npattern = .*\nretentions = 1s:1h\n")
    path = root / "carbon.conf"
    path.write_text(
        "[cache]\n"
        f"STORAGE_DIR = {root}/storage/\nLOCAL_DATA_DIR = {root}/storage/whisper/\n"
        f"WHITELISTS_DIR = {root}/storage/lists/\nCONF_DIR = {root}/\n"
        f"LOG_DIR = {root}/log/\nPID_DIR = {root}/run/\n"
        "ENABLE_LOGROTATION = False\nUSER =\nMAX_CACHE_SIZE = inf\n"
        "MAX_UPDATES_PER_SECOND = 10000\nMAX_CREATES_PER_MINUTE = inf\n"
        f"LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {line_port}\n"
        f"PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = {_free_port()}\n"
        f"CACHE_QUERY_INTERFACE = 127.0.0.1\nCACHE_QUERY_PORT = {_free_port()}\n"
        "ENABLE_UDP_LISTENER = False\nLOG_UPDATES = False\nCARBON_METRIC_INTERVAL = 0\n"
        "ENABLE_TAGS = False\n"
    )
    return path


def _stored(root: Path, metric: str) -> list[list[float]]:
    path = root / "storage" / "whisper" / (metric.replace(".", "/") + ".wsp")
    if not path.exists():
        return []
    output = subprocess.run(
        [SYSTEM_PYTHON, "-c", FETCH, str(path)], capture_output=True, check=True, timeout=20
    )
    points: list[list[float]] = json.loads(output.stdout)
    return points


async def _scenario(root: Path, carbon: str) -> None:
    line_port = _free_port()
    config_path = _carbon_config(root, line_port)
    listen = f"tcp://127.0.0.1:{_free_port()}"
    config = NodeConfig(
        node_id="solo",
        listen_address=listen,
        window=WindowConfig(size_ms=1_000, allowed_lateness_ms=0),
    )
    node = Node(config, ZmqTransport("solo", listen), SystemClock(), random.Random(1))
    stop = asyncio.Event()
    node_task = asyncio.create_task(node.run(stop))
    with (root / "carbon.out").open("wb") as log:
        process = subprocess.Popen(
            [carbon, f"--config={config_path}", "--nodaemon", "start"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
        try:
            await _push_and_read(root, node, GraphiteSink("127.0.0.1", line_port))
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            stop.set()
            await node_task


async def _push_and_read(root: Path, node: Node, sink: GraphiteSink) -> None:
    exporter = ClusterExporter(node, sink)
    node.ingest_statsd(b"shop.orders:3|c\nshop.orders:4|c\nshop.basket:12.5|g\nshop.t:5|ms")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    expected = {"shop.orders": [7.0], "shop.basket": [12.5], "shop.t.count": [1.0]}
    stored: dict[str, Any] = {}
    while loop.time() < deadline:
        exporter.collect(node.clock.now_ms())
        await exporter.flush()  # carbon may still be starting: the sink keeps its buffer
        for metric in expected:
            points = await asyncio.to_thread(_stored, root, metric)
            stored[metric] = [value for _, value in points]
        if stored == expected:
            break
        await asyncio.sleep(0.5)
    assert stored == expected, sink.stats


def test_a_real_carbon_stores_the_final_windows(tmp_path: Path) -> None:
    carbon = shutil.which("carbon-cache")
    if carbon is None:
        pytest.fail("carbon-cache is missing: apt-get install graphite-carbon (.ci/run does)")
    asyncio.run(_scenario(tmp_path, carbon))
