"""The agent's HTTP API against a real single-voter node on loopback."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from crdtstream.agent.http import build_app
from crdtstream.clock import SystemClock
from crdtstream.config import PolicyRule, RaftConfig
from crdtstream.node import Node, NodeConfig, PeerAddress
from transports.zeromq import ZmqTransport

pytestmark = [pytest.mark.timeout(60)]

EVENT_MS = 1_700_000_000_000
"""One event time for a quota's writes: a limit holds per window, and the wall clock may cross
a window boundary between two requests."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


Scenario = Callable[[TestClient], Awaitable[None]]  # type: ignore[type-arg]


async def _with_client(
    scenario: Scenario, peers: tuple[PeerAddress, ...] = (), *, voters: bool = True
) -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    config = NodeConfig(
        node_id="solo",
        listen_address=address,
        peers=peers,
        raft=RaftConfig(tick_ms=10),
        raft_voters=(PeerAddress("solo", address),) if voters else (),
        policy=(PolicyRule("quota.*", "strong"), PolicyRule("q.*", "quorum")),
        strong_timeout_ms=3_000,
        quorum_timeout_ms=300,
    )
    node = Node(config, ZmqTransport("solo", address), SystemClock(), random.Random(1))
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop))
    client = TestClient(TestServer(build_app(node)))
    await client.start_server()
    try:
        await scenario(client)
    finally:
        await client.close()
        stop.set()
        await task


def run(scenario: Scenario, peers: tuple[PeerAddress, ...] = (), *, voters: bool = True) -> None:
    """Run one scenario against a fresh node (with ``peers``; a Raft voter unless ``voters`` is
    False) and HTTP server."""
    asyncio.run(_with_client(scenario, peers, voters=voters))


def _url(key: str) -> str:
    return f"/v1/keys/{quote(key, safe='')}"


async def _statsd_ingest_then_read(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.post("/v1/ingest", data=b"hits:2|c|#env:prod\nhits:3|c|#env:prod\nbad")
    assert response.status == 200
    answer = await response.json()
    assert answer["accepted"] == 2
    assert answer["rejected"] == 1
    read = await (await client.get(_url("hits#env:prod"))).json()
    assert read["kind"] == "counter"
    assert read["mode"] == "eventual"
    assert sum(window["value"] for window in read["windows"]) == 5


async def _eventual_writes_and_errors(client: TestClient) -> None:  # type: ignore[type-arg]
    ok = await client.post(_url("latency"), json={"op": "observe", "value": 12.5})
    assert ok.status == 200
    read = await (await client.get(_url("latency"))).json()
    assert read["kind"] == "distribution"
    assert read["windows"][0]["value"]["count"] == 1
    conflict = await client.post(_url("latency"), json={"op": "add", "value": 1})
    assert conflict.status == 409
    assert (await client.post(_url("x"), data=b"not json")).status == 400
    assert (await client.post(_url("x"), json={"op": "explode", "value": 1})).status == 400
    assert (await client.get(_url("never-written"))).status == 404


async def _strong_conditional_adds_stop_at_the_limit(client: TestClient) -> None:  # type: ignore[type-arg]
    applied = []
    for _ in range(5):
        response = await client.post(
            _url("quota.api"),
            json={"op": "conditional_add", "value": 1, "limit": 3, "timestamp_ms": EVENT_MS},
        )
        assert response.status == 200, await response.text()
        applied.append((await response.json())["applied"])
    assert applied == [True, True, True, False, False]
    read = await (await client.get(_url("quota.api"))).json()
    assert read["mode"] == "strong"
    assert sum(window["value"] for window in read["windows"]) == 3


async def _quorum_writes_and_reads_on_one_node_and_status(client: TestClient) -> None:  # type: ignore[type-arg]
    # A cluster of one is its own majority.
    wrote = await client.post(_url("q.x"), json={"op": "add", "value": 2})
    assert wrote.status == 200, await wrote.text()
    assert (await wrote.json())["mode"] == "quorum"
    read = await (await client.get(_url("q.x"))).json()
    assert read["mode"] == "quorum"
    assert sum(window["value"] for window in read["windows"]) == 2
    eventual = await (await client.get(_url("q.x") + "?consistency=eventual")).json()
    assert (eventual["mode"], eventual["consistency"]) == ("quorum", "eventual")
    assert (await client.get(_url("q.x") + "?consistency=sometimes")).status == 400
    status = await (await client.get("/v1/status")).json()
    assert status["node_id"] == "solo"
    assert status["raft"]["voters"] == ["solo"]


async def _quorum_without_a_majority_is_503_and_the_write_is_kept(client: TestClient) -> None:  # type: ignore[type-arg]
    # The one configured peer never answers: two nodes need both for a majority.
    wrote = await client.post(_url("q.y"), json={"op": "add", "value": 5})
    assert wrote.status == 503
    assert "kept on this node" in (await wrote.json())["error"]
    assert (await client.get(_url("q.y"))).status == 503
    eventual = await (await client.get(_url("q.y") + "?consistency=eventual")).json()
    assert sum(window["value"] for window in eventual["windows"]) == 5
    removed = await client.post(_url("q.set"), json={"op": "remove", "value": "m"})
    assert removed.status == 200  # nothing to remove, nothing to confirm


def test_statsd_ingest_then_read() -> None:
    run(_statsd_ingest_then_read)


async def _statsd_lines_for_strong_keys_are_refused(client: TestClient) -> None:  # type: ignore[type-arg]
    body = b"quota.api:1|c\nhits:1|c\nquota.api:2|c|#env:prod\nquota.other:3|g"
    answer = await (await client.post("/v1/ingest", data=body)).json()
    assert (answer["accepted"], answer["strong_refused"]) == (1, 3)
    # Refused, not applied somewhere strong reads would not look.
    assert (await client.get(_url("quota.api"))).status == 404
    assert (await client.get(_url("quota.api") + "?consistency=eventual")).status == 404
    status = await (await client.get("/v1/status")).json()
    assert status["node"]["events_strong_refused"] == 3
    assert status["quorum"]["writes_confirmed"] == 0


def test_statsd_lines_for_strong_keys_are_refused() -> None:
    run(_statsd_lines_for_strong_keys_are_refused)


def test_eventual_writes_and_errors() -> None:
    run(_eventual_writes_and_errors)


async def _a_strong_retry_with_an_idempotency_key_applies_once(client: TestClient) -> None:  # type: ignore[type-arg]
    body = {"op": "add", "value": 5, "timestamp_ms": EVENT_MS}
    headers = {"Idempotency-Key": "order-17"}
    first = await client.post(_url("quota.retry"), json=body, headers=headers)
    again = await client.post(_url("quota.retry"), json=body, headers=headers)
    assert first.status == again.status == 200
    assert (await first.json())["value"] == (await again.json())["value"] == 5
    other = await client.post(_url("quota.retry"), json={**body, "value": 6}, headers=headers)
    assert other.status == 400
    assert "used for another request" in (await other.json())["error"]
    # Without a key every POST is a new write.
    for _ in range(2):
        assert (await client.post(_url("quota.retry"), json=body)).status == 200
    read = await (await client.get(_url("quota.retry"))).json()
    assert sum(window["value"] for window in read["windows"]) == 15


def test_a_strong_retry_with_an_idempotency_key_applies_once() -> None:
    run(_a_strong_retry_with_an_idempotency_key_applies_once)


def test_strong_conditional_adds_stop_at_the_limit() -> None:
    run(_strong_conditional_adds_stop_at_the_limit)


def test_quorum_writes_and_reads_on_one_node_and_status() -> None:
    run(_quorum_writes_and_reads_on_one_node_and_status)


def test_quorum_without_a_majority_is_503_and_the_write_is_kept() -> None:
    ghost = PeerAddress("ghost", f"tcp://127.0.0.1:{_free_port()}")
    run(_quorum_without_a_majority_is_503_and_the_write_is_kept, (ghost,))


async def _bad_input_is_400_not_500(client: TestClient) -> None:  # type: ignore[type-arg]
    far_future_ms = 10**13
    bodies = [
        (_url("x"), {"op": ["add"], "value": 1}),
        (_url("x"), {"op": {}, "value": 1}),
        (_url("x"), {"op": "add", "value": 10**400}),
        (_url("x"), {"op": "add", "value": [None, False]}),
        (_url("x"), {"op": "observe", "value": {"p": 1}}),
        (_url("quota.y"), {"op": "add", "value": 2**70}),
        (_url("quota.y"), {"op": "add", "value": 1, "timestamp_ms": 2**70}),
        (_url("quota.y"), {"op": "add", "value": 1, "timestamp_ms": far_future_ms}),
        (_url("quota.y"), {"op": ["add"], "value": 1}),
    ]
    for url, body in bodies:
        response = await client.post(url, json=body)
        assert response.status == 400, (body, await response.text())
    ingest = await (
        await client.post("/v1/ingest", data=b"clock.skew:1|c|T9999999999\nok:1|c")
    ).json()
    assert ingest["future_rejected"] == 1
    assert ingest["accepted"] == 1
    read = await (await client.get(_url("ok"))).json()
    assert sum(window["value"] for window in read["windows"]) == 1


def test_bad_input_is_400_not_500() -> None:
    run(_bad_input_is_400_not_500)


async def _a_strong_write_without_raft_is_refused_not_kept(client: TestClient) -> None:  # type: ignore[type-arg]
    for op in ("add", "conditional_add"):
        body = (
            {"op": op, "value": 1, "limit": 5}
            if op == "conditional_add"
            else {"op": op, "value": 1}
        )
        refused = await client.post(_url("quota.api"), json=body)
        assert refused.status == 400, await refused.text()
        assert "raft_voters" in (await refused.json())["error"]
    # Not applied anywhere a read could find it.
    assert (await client.get(_url("quota.api") + "?consistency=eventual")).status == 400
    status = await (await client.get("/v1/status")).json()
    assert status["catalog"]["keys"] == 0


def test_a_strong_write_without_raft_is_refused_not_kept() -> None:
    run(_a_strong_write_without_raft_is_refused_not_kept, voters=False)


async def _a_strong_write_goes_through_raft_not_the_eventual_store(client: TestClient) -> None:  # type: ignore[type-arg]
    wrote = await client.post(_url("quota.raft"), json={"op": "add", "value": 4})
    assert wrote.status == 200, await wrote.text()
    assert (await wrote.json())["applied"] is True
    status = await (await client.get("/v1/status")).json()
    assert status["catalog"]["keys"] == 0  # never declared in the eventual key catalog
    assert status["raft"]["applied"] >= 1


def test_a_strong_write_goes_through_raft_not_the_eventual_store() -> None:
    run(_a_strong_write_goes_through_raft_not_the_eventual_store)
