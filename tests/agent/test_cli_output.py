"""``crdtstream query`` and ``status`` print tables for people and JSON for machines."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient

from crdtstream.agent.demo import describe
from crdtstream.cli import main
from tests.node.test_http_api import _url, run


async def _query_and_status(client: TestClient, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[type-arg]
    for value in (12.5, 250.0, 3.25):
        await client.post(_url("api.latency"), json={"op": "observe", "value": value})
    node_url = str(client.make_url("/"))
    code = await asyncio.to_thread(main, ["query", "api.latency", "--node", node_url])
    assert code == 0
    table = capsys.readouterr().out
    assert "api.latency  kind=distribution  mode=eventual  read=eventual" in table
    assert "provisional" in table
    assert "count=3 sum=265.75 min=3.25 max=250" in table
    code = await asyncio.to_thread(main, ["query", "api.latency", "--node", node_url, "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert answer["windows"][0]["value"]["count"] == 3
    code = await asyncio.to_thread(main, ["status", "--node", node_url])
    text = capsys.readouterr().out
    assert code == 0
    assert "member" in text
    assert "solo" in text
    code = await asyncio.to_thread(main, ["query", "never.written", "--node", node_url])
    assert code == 1
    assert capsys.readouterr().err.startswith("crdtstream: 404: unknown key")


def test_query_and_status_print_tables_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    run(lambda client: _query_and_status(client, capsys))


def test_the_demo_prints_whole_values() -> None:
    assert describe(frozenset({"a", "b"})) == "2 items: a, b"
    assert describe(1234567.0) == "1234567"
    assert describe(17300.84) == "17300.84"
    assert describe(3.0) == "3"
