"""A real Prometheus server scrapes a node's ``/metrics`` and answers queries with its values.

Needs the ``prometheus`` binary (Debian package ``prometheus``; ``.ci/run`` installs it).
Everything listens on 127.0.0.1 on free ports; Prometheus is stopped on every exit path.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from crdtstream.agent.http import build_app
from crdtstream.clock import SystemClock
from crdtstream.config import WindowConfig
from crdtstream.node import Node, NodeConfig
from transports.zeromq import ZmqTransport

pytestmark = [pytest.mark.timeout(90), pytest.mark.multiprocess]

QUERY_DEADLINE_S = 45.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _config(tmp_path: Path, agent_port: int) -> Path:
    path = tmp_path / "prometheus.yml"
    path.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: crdtstream\n    scrape_interval: 1s\n"
        "    scrape_timeout: 1s\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n"
    )
    return path


def _query(prometheus_port: int, expression: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{prometheus_port}/api/v1/query?" + urllib.parse.urlencode(
        {"query": expression}
    )
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    result: list[dict[str, object]] = answer["data"]["result"]
    return result


async def _wait_for(prometheus_port: int, expression: str, expected: float) -> None:
    """Poll the query API until ``expression`` has one series equal to ``expected``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + QUERY_DEADLINE_S
    last: object = None
    while loop.time() < deadline:
        try:
            result = await asyncio.to_thread(_query, prometheus_port, expression)
        except OSError as error:  # Prometheus still starting
            last = error
        else:
            last = result
            values = [float(series["value"][1]) for series in result]  # type: ignore[index]
            if values == [expected]:
                return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{expression}: expected [{expected}], last answer {last!r}")


async def _scenario(tmp_path: Path, prometheus: str) -> None:
    listen = f"tcp://127.0.0.1:{_free_port()}"
    window = WindowConfig(size_ms=1_000, allowed_lateness_ms=0)
    config = NodeConfig(node_id="solo", listen_address=listen, window=window)
    node = Node(config, ZmqTransport("solo", listen), SystemClock(), random.Random(1))
    stop = asyncio.Event()
    node_task = asyncio.create_task(node.run(stop))
    runner = web.AppRunner(build_app(node))
    await runner.setup()
    agent_port, prometheus_port = _free_port(), _free_port()
    await web.TCPSite(runner, "127.0.0.1", agent_port).start()
    try:
        with (tmp_path / "prometheus.log").open("wb") as log:
            await _with_prometheus(prometheus, tmp_path, agent_port, prometheus_port, log, node)
    finally:
        await runner.cleanup()
        stop.set()
        await node_task


async def _with_prometheus(
    prometheus: str, tmp_path: Path, agent_port: int, prometheus_port: int, log: Any, node: Node
) -> None:
    process = subprocess.Popen(
        [
            prometheus,
            f"--config.file={_config(tmp_path, agent_port)}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        node.ingest_statsd(b"hits:2|c|#env:prod\nhits:3|c|#env:prod\nroom.temp:21.5|g\nbad")
        await _wait_for(prometheus_port, 'hits_total{env="prod",job="crdtstream"}', 5.0)
        await _wait_for(prometheus_port, "room_temp", 21.5)
        await _wait_for(prometheus_port, 'crdtstream_ingest_lines_total{outcome="ok"}', 3.0)
        await _wait_for(prometheus_port, 'crdtstream_ingest_lines_total{outcome="rejected"}', 1.0)
        await _wait_for(prometheus_port, 'up{job="crdtstream"}', 1.0)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_real_prometheus_scrapes_the_node(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("the prometheus binary is missing: apt-get install prometheus (.ci/run does)")
    asyncio.run(_scenario(tmp_path, prometheus))
