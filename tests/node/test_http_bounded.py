"""A bounded key over the agent's HTTP API, on a real one-node cluster on loopback."""

from __future__ import annotations

import asyncio
import random
import socket
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from crdtstream.agent.http import build_app
from crdtstream.clock import SystemClock
from crdtstream.config import PolicyRule
from crdtstream.node import Node, NodeConfig
from transports.zeromq import ZmqTransport

pytestmark = [pytest.mark.timeout(60)]

WINDOW_MS = 1_000
LIMIT = 1_000_000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _scenario() -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    rule = PolicyRule("b.*", "bounded", limit=LIMIT, window_ms=WINDOW_MS, members=("solo",))
    config = NodeConfig(
        node_id="solo", listen_address=address, policy=(rule,), bounded_timeout_ms=300
    )
    node = Node(config, ZmqTransport("solo", address), SystemClock(), random.Random(1))
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop))
    client = TestClient(TestServer(build_app(node)))
    await client.start_server()
    url = f"/v1/keys/{quote('b.api', safe='')}"
    try:
        # A node takes its share from the first window that opens after it started.
        for _ in range(100):
            read = await (await client.get(url)).json()
            if read["rights"]:
                break
            await asyncio.sleep(WINDOW_MS / 1000 / 20)
        assert read["mode"] == "bounded"
        assert read["limit"] == LIMIT
        assert read["rights"] > 0
        written = await client.post(url, json={"op": "consume", "value": 3})
        assert written.status == 200, await written.text()
        answer = await written.json()
        assert answer["applied"] is True
        listing = await (await client.get("/v1/keys", params={"prefix": "b."})).json()
        assert listing["keys"] == [{"key": "b.api", "kind": "counter", "mode": "bounded"}]
        after = await (await client.get(url)).json()
        # The window may have rolled over in between; then the new one starts from zero.
        assert after["value"] in (0, 3)
        assert after["value"] + after["rights"] == LIMIT
        refused = await client.post(url, json={"op": "consume", "value": LIMIT + 1})
        assert refused.status == 400
        assert "no_rights" in (await refused.json())["error"]
        wrong = await client.post(url, json={"op": "add", "value": 1})
        assert wrong.status == 400
        assert node.engine.bounded.timeout_ms == 300
    finally:
        await client.close()
        stop.set()
        await task


def test_a_bounded_key_shows_its_limit_and_rights_and_refuses_beyond_them() -> None:
    asyncio.run(_scenario())
